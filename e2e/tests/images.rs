//! The shipped images: each binary starts inside its image's root filesystem, as the image's
//! user 65532 with a read-only root, the way the process kubelet runs every pod of the tests.
//! `KT_IMAGES_UNDER_TEST` points the test at another image directory (`make images` checks the
//! release images with it); by default it reads the test images in the cache. No other
//! infrastructure is needed.

use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::core::v1::Container;
use kafkatable_e2e::kubelet::image::ImageStore;
use kafkatable_e2e::kubelet::sandbox::Sandbox;
use kafkatable_e2e::kubelet::spec::{image_argv, image_env};

#[tokio::test]
async fn each_binary_answers_help_inside_its_image_as_65532_with_a_read_only_root()
-> anyhow::Result<()> {
    let cache = std::env::var_os("KAFKATABLE_CACHE").map_or_else(
        || PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/kafkatable"),
        PathBuf::from,
    );
    let dir = std::env::var_os("KT_IMAGES_UNDER_TEST")
        .map_or_else(|| cache.join("images/test"), PathBuf::from);
    let scratch = std::env::temp_dir().join(format!("kt-images-test-{}", std::process::id()));
    let store = ImageStore::new(dir.clone(), scratch.join("rootfs"));
    let version = env!("CARGO_PKG_VERSION");
    for name in ["kafkatable-operator", "kafkatable-ingester"] {
        let reference = format!("ghcr.io/kafkatable/{name}:{version}");
        let image = store.resolve(&reference).await?;
        assert_eq!(image.config.user.as_deref(), Some("65532:65532"), "{name}");
        assert_eq!(
            image.config.entrypoint,
            Some(vec![format!("/usr/local/bin/{name}")]),
            "{name}"
        );
        // Nothing in the image but what the binary needs: no shell, no package manager.
        assert!(!image.rootfs.join("bin/sh").exists(), "{name} has a shell");
        assert!(
            image
                .rootfs
                .join("etc/ssl/certs/ca-certificates.crt")
                .is_file()
        );
        assert!(
            image
                .rootfs
                .join("usr/share/zoneinfo/Europe/Paris")
                .is_file()
        );

        let container = Container {
            args: Some(vec!["--help".into()]),
            ..Container::default()
        };
        let env_vars = image_env(&image.config, &Default::default(), Default::default());
        let sandbox = Sandbox {
            rootfs: image.rootfs.clone(),
            state_dir: scratch.join(name),
            read_only_root: true,
            mounts: Vec::new(),
            uid: 65532,
            gid: 65532,
            groups: Vec::new(),
            workdir: "/".into(),
            argv: image_argv(&container, &image.config, &env_vars),
            env: env_vars.into_iter().collect(),
        };
        let spec = scratch.join(format!("{name}.json"));
        std::fs::write(&spec, serde_json::to_vec(&sandbox)?)?;
        let out = Command::new(env!("CARGO_BIN_EXE_process-kubelet"))
            .args(["run-in-rootfs", &spec.display().to_string()])
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(&format!("Usage: {name}")),
            "{name} --help in {} exited {:?}:\n{stdout}\n{}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        // The binary ran from the image: the host has no /usr/local/bin/<name>.
        assert!(!PathBuf::from(format!("/usr/local/bin/{name}")).exists());
        let size: u64 = std::fs::metadata(dir.join(format!("{name}-{version}.tar")))?.len();
        println!("{reference}: archive {} MB", size / 1_000_000);
    }
    std::fs::remove_dir_all(&scratch)?;
    Ok(())
}
