//! `make image` (hack/image.sh) builds an OCI archive without a Docker daemon: one layer with a
//! static binary at the Go operator's path, nonroot, no shell, OCI labels — and the binary runs
//! from the unpacked layer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn blob(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").expect("sha256 digest"))
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn make_image_writes_a_runnable_nonroot_oci_archive() {
    let root = testenv::repo_root();
    let work = std::env::temp_dir().join(format!("mm-image-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let archive = work.join("image.oci.tar");
    // The dev profile keeps the test's build short; `make image` uses release, same steps.
    run(Command::new("bash")
        .arg(root.join("hack/image.sh"))
        .env("IMAGE_PROFILE", "dev")
        .env("IMAGE_OUT", &archive)
        .current_dir(&root));

    let layout = work.join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&layout));
    assert_eq!(json(&layout.join("oci-layout"))["imageLayoutVersion"], "1.0.0");
    let index = json(&layout.join("index.json"));
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1);
    assert_eq!(
        manifests[0]["annotations"]["org.opencontainers.image.ref.name"],
        format!("mattermost-operator:{}", env!("CARGO_PKG_VERSION"))
    );
    let manifest = json(&blob(&layout, manifests[0]["digest"].as_str().unwrap()));
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let config = json(&blob(&layout, manifest["config"]["digest"].as_str().unwrap()));
    assert_eq!(
        (config["os"].as_str(), config["architecture"].as_str()),
        (Some("linux"), Some("amd64"))
    );
    let c = &config["config"];
    assert_eq!(c["Entrypoint"], serde_json::json!(["/mattermost-operator"]));
    assert_eq!(c["User"], "65532:65532");
    let labels = &c["Labels"];
    assert_eq!(labels["org.opencontainers.image.title"], "mattermost-operator");
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    for key in ["revision", "created", "source", "description"] {
        let v = labels[format!("org.opencontainers.image.{key}")]
            .as_str()
            .unwrap_or_default();
        assert!(!v.is_empty(), "label {key} is set");
    }

    // One layer: the binary, passwd/group and /tmp; no shell.
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let rootfs = work.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    let layer = blob(&layout, layers[0]["digest"].as_str().unwrap());
    let listing = run(Command::new("tar").arg("-tvzf").arg(&layer));
    run(Command::new("tar").arg("-xzf").arg(&layer).arg("-C").arg(&rootfs));
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with("./mattermost-operator")),
        "{listing}"
    );
    for absent in ["bin/sh", "bin/bash", "usr/bin"] {
        assert!(!rootfs.join(absent).exists(), "{absent} must not be in the image");
    }
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(passwd.contains("nonroot:x:65532:65532"));
    let bin = rootfs.join("mattermost-operator");
    let dynamic = run(Command::new("readelf").arg("-d").arg(&bin));
    assert!(!dynamic.contains("NEEDED"), "static binary: {dynamic}");

    // The binary runs from the layer.
    let version = run(Command::new(&bin).arg("--version"));
    assert_eq!(
        version.trim(),
        format!("mattermost-operator {}", env!("CARGO_PKG_VERSION"))
    );
    let crds = run(Command::new(&bin).arg("crd"));
    assert!(crds.contains("name: mattermosts.installation.mattermost.com"));
    assert!(crds.contains("name: clusterinstallations.mattermost.com"));
    let _ = std::fs::remove_dir_all(&work);
}
