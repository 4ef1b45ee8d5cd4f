//! Bad requests to containerd's CRI plugin with holdfast as the handler:
//! each gets a gRPC error whose code and message name the problem, and
//! none leaves a pod, container, shim, mount, cgroup, netns or CNI state
//! behind. The codes are what containerd 1.6.20 and 1.7.24 answer (the CRI
//! plugin maps plain errors to Unknown; a missing shim TOML is the shim's
//! NotFound, passed through).

use std::time::Duration;

use anyhow::{bail, ensure, Result};
use holdfast_integration::api::ApiError;
use holdfast_integration::cri::{handler_under_test, Cri, MISSING_CONFIG_HANDLER};
use holdfast_integration::each_version_of;
use tonic::Code;

/// Checks that `r` failed with one of `codes` and a message naming every
/// one of `words` (case-insensitive).
fn expect_error<T: std::fmt::Debug>(
    what: &str,
    r: std::result::Result<T, ApiError>,
    codes: &[Code],
    words: &[&str],
) -> Result<ApiError> {
    let e = match r {
        Ok(v) => bail!("{what}: expected an error, got {v:?}"),
        Err(e) => e,
    };
    eprintln!("{what}: {e}");
    ensure!(
        codes.contains(&e.code),
        "{what}: code {:?}, want one of {codes:?} ({e})",
        e.code
    );
    let msg = e.message.to_lowercase();
    for w in words {
        ensure!(
            msg.contains(&w.to_lowercase()),
            "{what}: the message does not name {w:?}: {e}"
        );
    }
    Ok(e)
}

/// Nothing is left and CRI lists no pod and no container.
fn nothing_left(cri: &Cri) -> Result<()> {
    ensure!(cri.list_pods()?.is_empty(), "pods: {:?}", cri.list_pods()?);
    ensure!(
        cri.list_containers()?.is_empty(),
        "containers: {:?}",
        cri.list_containers()?
    );
    cri.wait_no_leaks(Duration::from_secs(15))
}

#[test]
fn bad_cri_requests_get_clear_errors_and_leave_nothing() {
    each_version_of(|cri: &Cri| {
        // An unknown runtime handler.
        let cfg = cri.pod_config("unknown-handler");
        expect_error(
            "RunPodSandbox with an unknown handler",
            cri.run_pod(&cfg, "no-such-handler"),
            &[Code::Unknown],
            &["no-such-handler"],
        )?;
        nothing_left(cri)?;

        // A pod config without metadata.
        let mut cfg = cri.pod_config("no-metadata");
        cfg.metadata = None;
        expect_error(
            "RunPodSandbox without metadata",
            cri.run_pod(&cfg, handler_under_test()),
            &[Code::Unknown],
            &["metadata"],
        )?;
        nothing_left(cri)?;

        // A handler whose shim TOML does not exist: the shim refuses the
        // sandbox's Create (after CRI set up its network), naming the file;
        // containerd undoes the network and everything else.
        let cfg = cri.pod_config("missing-config");
        expect_error(
            "RunPodSandbox on a handler whose ConfigPath is missing",
            cri.run_pod(&cfg, MISSING_CONFIG_HANDLER),
            &[Code::NotFound],
            &["missing.toml"],
        )?;
        nothing_left(cri)?;

        // CreateContainer in a sandbox that does not exist.
        let pod_cfg = cri.pod_config("ghost");
        let c = cri.container_config("c", &["/bin/true"]);
        expect_error(
            "CreateContainer in a sandbox that does not exist",
            cri.create_container("0123456789abcdef-no-such-sandbox", &c, &pod_cfg),
            &[Code::NotFound],
            &["0123456789abcdef-no-such-sandbox"],
        )?;
        // Calls on a container that does not exist.
        expect_error(
            "StartContainer of a container that does not exist",
            cri.start_container("no-such-container"),
            &[Code::NotFound],
            &["no-such-container"],
        )?;
        expect_error(
            "ExecSync in a container that does not exist",
            cri.exec_sync("no-such-container", &["/bin/true"], 5),
            &[Code::NotFound],
            &["no-such-container"],
        )?;
        nothing_left(cri)?;

        // A real pod, then: the same pod a second time (its name is
        // reserved), a container of an image that is not there, a
        // container without metadata. The pod stays usable throughout.
        let pod_cfg = cri.pod_config("real");
        let pod = cri.run_pod(&pod_cfg, handler_under_test())?;
        let name = pod_cfg
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        expect_error(
            "RunPodSandbox of a pod that exists",
            cri.run_pod(&pod_cfg, handler_under_test()),
            &[Code::Unknown],
            &[&name, "reserved"],
        )?;
        let mut c = cri.container_config("no-image", &["/bin/true"]);
        if let Some(img) = c.image.as_mut() {
            img.image = "localhost/holdfast-it/no-such-image:v0".into();
        }
        expect_error(
            "CreateContainer of an image that is not there",
            cri.create_container(&pod, &c, &pod_cfg),
            &[Code::NotFound],
            &["no-such-image"],
        )?;
        let mut c = cri.container_config("no-metadata", &["/bin/true"]);
        c.metadata = None;
        expect_error(
            "CreateContainer without metadata",
            cri.create_container(&pod, &c, &pod_cfg),
            &[Code::Unknown],
            &["metadata"],
        )?;
        ensure!(cri.list_pods()?.len() == 1, "pods: {:?}", cri.list_pods()?);
        ensure!(
            cri.list_containers()?.is_empty(),
            "containers: {:?}",
            cri.list_containers()?
        );
        // The pod still runs a container.
        let ok = cri.container_config("ok", &["/bin/sleep", "infinity"]);
        let id = cri.create_container(&pod, &ok, &pod_cfg)?;
        cri.start_container(&id)?;
        let r = cri.exec_sync(&id, &["/bin/echo", "still-fine"], 10)?;
        ensure!(
            String::from_utf8_lossy(&r.stdout) == "still-fine\n",
            "{r:?}"
        );
        cri.stop_pod(&pod)?;
        cri.remove_pod(&pod)?;
        cri.remove_log_dirs();
        nothing_left(cri)
    });
}
