// Command kt-health reads KafkaTable objects (JSON files) and prints, for each, the verdicts of
// the code GitOps tools run: the kstatus library (Flux, `kubectl wait`-style waiters, Helm 4)
// and the chart's Argo CD health script run by gopher-lua, the Lua VM Argo CD embeds, with the
// object converted to Lua values the way Argo CD converts it.
//
// Usage: kt-health health.lua object.json...   (one JSON line per object on stdout)
package main

import (
	"encoding/json"
	"fmt"
	"os"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	File           string `json:"file"`
	Kstatus        string `json:"kstatus"`
	KstatusMessage string `json:"kstatusMessage"`
	Argo           string `json:"argo"`
	ArgoMessage    string `json:"argoMessage"`
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: kt-health health.lua object.json...")
		os.Exit(2)
	}
	script, err := os.ReadFile(os.Args[1])
	check(err)
	for _, file := range os.Args[2:] {
		raw, err := os.ReadFile(file)
		check(err)
		obj := map[string]interface{}{}
		check(json.Unmarshal(raw, &obj))
		u := &unstructured.Unstructured{}
		check(u.UnmarshalJSON(raw))
		res, err := status.Compute(u)
		check(err)
		argo, message, err := argoHealth(string(script), u.Object)
		check(err)
		out, _ := json.Marshal(verdict{file, string(res.Status), res.Message, argo, message})
		fmt.Println(string(out))
	}
}

// argoHealth runs a health script as Argo CD does: base, table, string and math libraries, the
// object as the global `obj`, and the returned table's `status` and `message`.
func argoHealth(script string, obj map[string]interface{}) (string, string, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}, {lua.StringLibName, lua.OpenString}, {lua.MathLibName, lua.OpenMath}} {
		l.Push(l.NewFunction(lib.open))
		l.Push(lua.LString(lib.name))
		l.Call(1, 0)
	}
	l.SetGlobal("obj", decode(l, obj))
	if err := l.DoString(script); err != nil {
		return "", "", err
	}
	hs, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return "", "", fmt.Errorf("the script returned %s, not a table", l.Get(-1).Type())
	}
	return lua.LVAsString(hs.RawGetString("status")), lua.LVAsString(hs.RawGetString("message")), nil
}

func decode(l *lua.LState, v interface{}) lua.LValue {
	switch v := v.(type) {
	case map[string]interface{}:
		t := l.NewTable()
		for k, e := range v {
			t.RawSetString(k, decode(l, e))
		}
		return t
	case []interface{}:
		t := l.NewTable()
		for _, e := range v {
			t.Append(decode(l, e))
		}
		return t
	case string:
		return lua.LString(v)
	case bool:
		return lua.LBool(v)
	case int64:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	case nil:
		return lua.LNil
	}
	return lua.LString(fmt.Sprint(v))
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "kt-health:", err)
		os.Exit(1)
	}
}
