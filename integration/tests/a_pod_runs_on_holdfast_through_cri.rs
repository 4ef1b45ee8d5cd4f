//! containerd's CRI plugin runs a pod on holdfast's shim (handler
//! `holdfast`, the shipped snippet) as kubelet would drive it: a sandbox on
//! the bridge network, two app containers sharing its network and PID
//! namespaces, ContainerStatus, ExecSync, the CRI log files, then
//! StopPodSandbox and RemovePodSandbox leave nothing behind.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context};
use holdfast_integration::cri::{self, handler_under_test, poll, Cri};
use holdfast_integration::{each_version_of, is_go_shim, procs, system};
use k8s_cri::v1::{ContainerState, NamespaceMode, PodSandboxState};

/// Lines each stream of the logging container writes.
const LINES: usize = 200;

#[test]
fn a_pod_runs_on_holdfast_through_cri() {
    each_version_of(|cri: &Cri| {
        let cd = cri.containerd();
        let mut pod_cfg = cri.pod_config("web");
        // Containers of the pod share one PID namespace (the pause
        // container's), as with shareProcessNamespace: true.
        if let Some(ns) = pod_cfg
            .linux
            .as_mut()
            .and_then(|l| l.security_context.as_mut())
            .and_then(|s| s.namespace_options.as_mut())
        {
            ns.pid = NamespaceMode::Pod as i32;
        }
        let handler = handler_under_test();
        let pod = cri.run_pod(&pod_cfg, handler)?;

        // The sandbox: ready, on our handler, with an IP in the subnet.
        let st = cri.pod_status(&pod)?;
        ensure!(
            st.state == PodSandboxState::SandboxReady as i32,
            "sandbox state {}",
            st.state
        );
        ensure!(
            st.runtime_handler == handler,
            "handler {:?}",
            st.runtime_handler
        );
        let ip = cri.pod_ip(&pod)?;
        ensure!(
            ip.starts_with(&format!("{}.", cri.net().prefix)),
            "pod IP {ip} is not in the fixture's subnet {}",
            cri.net().subnet()
        );
        let netns: Vec<_> = fs::read_dir(cri.netns_dir())
            .context("the CRI netns folder")?
            .filter_map(|e| e.ok())
            .collect();
        ensure!(netns.len() == 1, "netns files: {netns:?}");

        // A logging server and a client in the pod.
        let script = format!(
            "mkdir -p /www && echo hello-from-server > /www/x && \
             i=1; while [ $i -le {LINES} ]; do echo \"out $i\"; echo \"err $i\" >&2; i=$((i+1)); done; \
             exec httpd -f -p 127.0.0.1:8080 -h /www"
        );
        let server_cfg = cri.container_config("server", &["/bin/sh", "-c", &script]);
        let client_cfg = cri.container_config("client", &["/bin/sleep", "infinity"]);
        let server = cri.create_container(&pod, &server_cfg, &pod_cfg)?;
        let client = cri.create_container(&pod, &client_cfg, &pod_cfg)?;
        let (state, _) = cri.container_state(&server)?;
        ensure!(
            state == ContainerState::ContainerCreated,
            "server is {state:?}"
        );
        cri.start_container(&server)?;
        cri.start_container(&client)?;
        let mut pids = Vec::new();
        for id in [&server, &client] {
            let pid = cri.wait_container_state(
                id,
                ContainerState::ContainerRunning,
                Duration::from_secs(20),
            )?;
            ensure!(
                pid > 0 && procs::alive(pid),
                "container {id}: pid {pid} not alive"
            );
            let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            ensure!(
                cgroup.contains(&format!("{}/{id}", cd.cgroup_parent())),
                "container {id} (pid {pid}) is not in the fixture's cgroup parent:\n{cgroup}"
            );
            pids.push(pid);
        }
        // One shim serves the whole pod (holdfast's default `shim_per =
        // "pod"`, as the Go shim does): the sandbox's, of the binary under
        // test, parent of every container's init.
        cd.check_shim_binary(&pod)?;
        let shim = cd
            .shim_pid_of(&pod)
            .context("no shim process serves the sandbox")?;
        for (id, pid) in [&server, &client].iter().zip(&pids) {
            let parent = procs::stat(*pid).map(|(ppid, _)| ppid);
            ensure!(
                parent == Some(shim),
                "container {id} (pid {pid}) has parent {parent:?}, not the pod's shim {shim}"
            );
        }
        // While the pod runs, the leak check sees each kind of state it
        // has (so an empty check at the end means something).
        let running = cri.leaks();
        for (kind, at_least) in [
            ("shim process ", 1),
            ("mount ", 4),
            ("cgroup ", 3),
            ("k8s.io container ", 3),
            ("k8s.io task ", 3),
            ("k8s.io active snapshot ", 3),
            ("CRI sandboxes folder ", 2),
            ("CRI containers folder ", 2),
            ("netns ", 1),
            ("runc state ", 3),
            ("shim socket ", if is_go_shim() { 0 } else { 1 }),
            ("CNI cache ", 2),
            ("IPAM allocation ", 1),
            ("bridge ", 1),
            ("journal ", if is_go_shim() { 0 } else { 3 }),
            ("pod log folder ", 1),
        ] {
            let n = running.iter().filter(|l| l.starts_with(kind)).count();
            ensure!(
                n >= at_least,
                "the leak check sees {n} {kind:?}, want >= {at_least}:\n  {}",
                running.join("\n  ")
            );
        }

        // ExecSync: stdout, stderr and the exit code come back apart.
        let r = cri.exec_sync(
            &client,
            &["/bin/sh", "-c", "echo to-out; echo to-err >&2; exit 3"],
            10,
        )?;
        ensure!(
            String::from_utf8_lossy(&r.stdout) == "to-out\n"
                && String::from_utf8_lossy(&r.stderr) == "to-err\n"
                && r.exit_code == 3,
            "ExecSync: {r:?}"
        );

        // Shared network namespace: the client reaches the server on
        // loopback, and both see the pod IP on eth0.
        let body = poll(
            "the client fetches from the server on 127.0.0.1",
            Duration::from_secs(15),
            || {
                let r = cri.exec_sync(
                    &client,
                    &["/bin/wget", "-q", "-O", "-", "http://127.0.0.1:8080/x"],
                    10,
                )?;
                Ok((r.exit_code == 0).then(|| String::from_utf8_lossy(&r.stdout).into_owned()))
            },
        )?;
        ensure!(body == "hello-from-server\n", "fetched {body:?}");
        for id in [&server, &client] {
            let r = cri.exec_sync(id, &["/bin/ip", "-4", "-o", "addr", "show", "eth0"], 10)?;
            let out = String::from_utf8_lossy(&r.stdout);
            ensure!(
                out.contains(&format!("inet {ip}/24")),
                "eth0 of {id}: {out}"
            );
        }
        // Shared PID namespace: the client sees the server's httpd and the
        // pause container's sleep.
        let r = cri.exec_sync(&client, &["/bin/ps", "-o", "pid,args"], 10)?;
        let ps = String::from_utf8_lossy(&r.stdout);
        ensure!(
            ps.contains("httpd -f -p 127.0.0.1:8080") && ps.contains("sleep infinity"),
            "ps in the client:\n{ps}"
        );

        // The server's CRI log: both streams, every line once, in order.
        let log_path = PathBuf::from(&pod_cfg.log_directory).join(&server_cfg.log_path);
        let st = cri
            .container_status(&server)?
            .status
            .context("server status")?;
        ensure!(
            std::path::Path::new(&st.log_path) == log_path,
            "ContainerStatus log path {:?}, want {}",
            st.log_path,
            log_path.display()
        );
        let lines = poll(
            "the server's log has every line",
            Duration::from_secs(15),
            || {
                let text = fs::read_to_string(&log_path).unwrap_or_default();
                let lines = cri::parse_pod_log(&text)?;
                Ok((lines.len() >= 2 * LINES).then_some(lines))
            },
        )?;
        ensure!(
            lines.len() == 2 * LINES,
            "{} log lines, want {}",
            lines.len(),
            2 * LINES
        );
        for (stream, word) in [("stdout", "out"), ("stderr", "err")] {
            let want: Vec<String> = (1..=LINES).map(|i| format!("{word} {i}")).collect();
            let got = cri::stream_texts(&lines, stream);
            ensure!(got == want, "{stream} lines differ: got {got:?}");
        }
        ensure!(
            lines.iter().all(|l| !l.partial),
            "a partial line in {lines:?}"
        );
        // The shim honoured the handler's ConfigPath: its journal is where
        // the fixture's shim TOML says.
        let journal = cri.journal_dir().join(cri::CRI_NAMESPACE).join(&server);
        ensure!(
            is_go_shim() || journal.is_dir(),
            "no journal at {}",
            journal.display()
        );

        // With `shim_per = "container"` (handler holdfast-per-container),
        // the container gets a shim of its own, apart from its sandbox's.
        if !is_go_shim() {
            let cfg2 = cri.pod_config("apart");
            let pod2 = cri.run_pod(&cfg2, cri::PER_CONTAINER_HANDLER)?;
            let c = cri.create_container(
                &pod2,
                &cri.container_config("alone", &["/bin/sleep", "infinity"]),
                &cfg2,
            )?;
            cri.start_container(&c)?;
            let pid = cri.wait_container_state(
                &c,
                ContainerState::ContainerRunning,
                Duration::from_secs(20),
            )?;
            cd.check_shim_binary(&c)?;
            let (own, sandbox) = (cd.shim_pid_of(&c), cd.shim_pid_of(&pod2));
            ensure!(
                own.is_some() && sandbox.is_some() && own != sandbox,
                "container shim {own:?}, sandbox shim {sandbox:?}: not apart"
            );
            ensure!(
                procs::stat(pid).map(|(ppid, _)| ppid) == own,
                "container {c} is not a child of its own shim {own:?}"
            );
            cri.stop_pod(&pod2)?;
            cri.remove_pod(&pod2)?;
        }

        // StopPodSandbox stops every container; RemovePodSandbox removes
        // them; then nothing is left.
        cri.stop_pod(&pod)?;
        for id in [&server, &client] {
            let (state, _) = cri.container_state(id)?;
            ensure!(
                state == ContainerState::ContainerExited,
                "{id} is {state:?} after StopPodSandbox"
            );
        }
        let st = cri.pod_status(&pod)?;
        ensure!(
            st.state == PodSandboxState::SandboxNotready as i32,
            "sandbox state {}",
            st.state
        );
        cri.remove_pod(&pod)?;
        ensure!(
            cri.list_pods()?.is_empty(),
            "pods left: {:?}",
            cri.list_pods()?
        );
        ensure!(
            cri.list_containers()?.is_empty(),
            "containers left: {:?}",
            cri.list_containers()?
        );
        for pid in pids {
            ensure!(
                procs::wait_gone(pid, Duration::from_secs(5)),
                "process {pid} survived"
            );
        }
        ensure!(
            system::cgroups_below(cd.cgroup_parent()).is_empty(),
            "cgroups left"
        );
        cri.remove_log_dirs();
        cri.wait_no_leaks(Duration::from_secs(15))
    });
}
