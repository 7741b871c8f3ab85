-- Argo CD health check for kafkatable.io/KafkaTable. Install it in argocd-cm as
-- resource.customizations.health.kafkatable.io_KafkaTable (see the chart's README).
--   Progressing  being deleted, not yet observed, the spec change not yet observed, or
--                rolling out / catching up (Reconciling=True)
--   Suspended    spec.suspend is true
--   Degraded     Stalled=True (needs a change: invalid spec, pods crash-looping with nothing
--                committed) or Degraded=True (broker, Secret, table, commits, pods)
--   Healthy      Ready=True
local hs = {status = "Progressing", message = "Waiting for the operator to report"}
if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  hs.message = "Being deleted: the operator removes the ingesters and their consumer group"
  return hs
end
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and (obj.status.observedGeneration == nil or obj.status.observedGeneration < generation) then
  hs.message = "The operator has not observed generation " .. tostring(generation) .. " yet"
  return hs
end
local by_type = {}
for _, c in ipairs(obj.status.conditions) do
  -- A condition computed for an older generation says nothing about this one.
  if c.observedGeneration == nil or generation == nil or c.observedGeneration >= generation then
    by_type[c.type] = c
  end
end
local function is_true(t) return by_type[t] ~= nil and by_type[t].status == "True" end
local function describe(t) return by_type[t].reason .. ": " .. (by_type[t].message or "") end
if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "spec.suspend is true: no ingesters run"
  return hs
end
if is_true("Stalled") then
  hs.status = "Degraded"
  hs.message = describe("Stalled")
  return hs
end
if is_true("Degraded") then
  hs.status = "Degraded"
  hs.message = describe("Degraded")
  return hs
end
if is_true("Reconciling") then
  hs.message = describe("Reconciling")
  return hs
end
if is_true("Ready") then
  hs.status = "Healthy"
  hs.message = describe("Ready")
  return hs
end
if by_type["Ready"] ~= nil then
  hs.message = describe("Ready")
end
return hs
