//! The real `streamgate` binary: kill -9 in the middle of an operation and restart, graceful
//! shutdown on SIGTERM, one worker thread (the current-thread scheduler), the start-up refusals, `--help`, `check-config` on every configuration
//! shipped under `deploy/`, and `probe` (the container image's health check).

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use streamgate::pb;
use streamgate::pb::operation_service_client::OperationServiceClient;
use streamgate::pb::stream::State;
use streamgate::pb::stream_service_client::StreamServiceClient;
use support::otlp::OtlpReceiver;
use support::{Binary, wait_on};

fn write_config(dir: &std::path::Path, create_delay: &str) -> std::path::PathBuf {
    let path = dir.join("streamgate.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\ndrain_timeout = \"3s\"\n[store]\nurl = \"sqlite://{}/state/sg.db\"\n\
             [[providers]]\nid = \"local\"\nkind = \"local\"\ncreate_delay = \"{create_delay}\"\n",
            dir.display()
        ),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn kill_9_mid_operation_then_restart_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "3s");
    let mut first = Binary::spawn(&config, dir.path(), "first");
    let channel = first.ready().await;
    let mut streams = StreamServiceClient::new(channel.clone());
    let op = streams
        .create_stream(pb::CreateStreamRequest {
            parent: "providers/local".into(),
            stream_id: "crash".into(),
            stream: Some(pb::Stream {
                media_type: "video/h264".into(),
                data_retention_hours: 12,
                ..Default::default()
            }),
            request_id: "crash-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!op.done);
    let created = Instant::now();

    first.signal("KILL");
    let status = first.wait_exit(Duration::from_secs(5)).await;
    assert!(!status.success(), "killed, not exited: {status}");

    let mut second = Binary::spawn(&config, dir.path(), "second");
    let channel = second.ready().await;
    let mut ops = OperationServiceClient::new(channel.clone());
    let before = ops
        .get_operation(pb::GetOperationRequest {
            name: op.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(before.metadata.as_ref().unwrap().step, "creating");
    let done = wait_on(&channel, &op).await;
    assert!(done.done, "{done:?}");
    assert!(
        created.elapsed() >= Duration::from_millis(2900),
        "the create delay counts from the original creation"
    );
    let Some(pb::operation::Result::Stream(stream)) = done.result else {
        panic!("{done:?}");
    };
    assert_eq!(stream.state, State::Active as i32);
    assert_eq!(stream.data_retention_hours, 12);

    // The same request_id after the restart still names the same operation.
    let mut streams = StreamServiceClient::new(channel);
    let retry = streams
        .create_stream(pb::CreateStreamRequest {
            parent: "providers/local".into(),
            stream_id: "crash".into(),
            stream: Some(pb::Stream {
                media_type: "video/h264".into(),
                data_retention_hours: 12,
                ..Default::default()
            }),
            request_id: "crash-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retry.name, op.name);
}

/// Group commit (SQLite statements queued together share one transaction) under a crash: every
/// create the gateway answered is in the store and finishes after the restart, whether its
/// batch committed before the kill or not.
#[tokio::test]
async fn kill_9_under_concurrent_creates_loses_no_accepted_operation() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "200ms");
    let mut first = Binary::spawn(&config, dir.path(), "first");
    let channel = first.ready().await;
    let (answers, mut answered) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..96 {
        let mut streams = StreamServiceClient::new(channel.clone());
        let answers = answers.clone();
        tokio::spawn(async move {
            let created = streams
                .create_stream(pb::CreateStreamRequest {
                    parent: "providers/local".into(),
                    stream_id: format!("burst-{i}"),
                    request_id: format!("burst-{i}"),
                    ..Default::default()
                })
                .await;
            let _ = answers.send((i, created.map(|r| r.into_inner())));
        });
    }
    drop(answers);
    // Kill once a third has been answered: the rest are in flight, some in batches not yet
    // committed.
    let mut accepted = Vec::new();
    while accepted.len() < 32 {
        let (i, created) = answered
            .recv()
            .await
            .expect("every call answered or failed");
        if let Ok(op) = created {
            accepted.push((i, op));
        }
    }
    first.signal("KILL");
    let status = first.wait_exit(Duration::from_secs(5)).await;
    assert!(!status.success(), "killed, not exited: {status}");
    while let Some((i, created)) = answered.recv().await {
        if let Ok(op) = created {
            accepted.push((i, op));
        }
    }

    let mut second = Binary::spawn(&config, dir.path(), "second");
    let channel = second.ready().await;
    let mut streams = StreamServiceClient::new(channel.clone());
    for (i, op) in &accepted {
        let done = wait_on(&channel, op).await;
        assert!(done.done, "burst-{i}: {done:?}");
        let Some(pb::operation::Result::Stream(stream)) = &done.result else {
            panic!("burst-{i}: {done:?}");
        };
        assert_eq!(stream.state, State::Active as i32, "burst-{i}");
        let stream = streams
            .get_stream(pb::GetStreamRequest {
                name: format!("providers/local/streams/burst-{i}"),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("burst-{i} accepted, then lost: {e:?}"))
            .into_inner();
        assert_eq!(stream.state, State::Active as i32, "burst-{i}");
    }
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "100ms");
    let mut gateway = Binary::spawn(&config, dir.path(), "term");
    let channel = gateway.ready().await;
    let mut streams = StreamServiceClient::new(channel.clone());
    let op = streams
        .create_stream(pb::CreateStreamRequest {
            parent: "providers/local".into(),
            stream_id: "t".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    OperationServiceClient::new(channel.clone())
        .wait_operation(pb::WaitOperationRequest {
            name: op.name,
            timeout: None,
        })
        .await
        .unwrap();
    let mut watch = streams
        .watch_stream(pb::WatchStreamRequest {
            name: "providers/local/streams/t".into(),
        })
        .await
        .unwrap()
        .into_inner();
    watch.message().await.unwrap().unwrap();

    let started = Instant::now();
    gateway.signal("TERM");
    // The open watch ends cleanly instead of holding the drain.
    assert!(watch.message().await.unwrap().is_none());
    let status = gateway.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
    // Drained, not cut off at the 3 s bound (the slack is for a loaded machine).
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    let log = std::fs::read_to_string(&gateway.log).unwrap();
    assert!(log.contains("shutting down"), "{log}");
    assert!(log.contains("stopped"), "{log}");
    assert!(!log.contains("after the drain bound"), "{log}");
}

/// One worker thread (`[server] worker_threads = 1`, here through its variable; the default on
/// a machine, cgroup or affinity mask of one core) runs the gateway on tokio's current-thread
/// scheduler: 64 concurrent creates over one connection are all answered and finished, their
/// spans reach the OTLP receiver, and SIGTERM drains and exits 0 with the exporters flushed —
/// nothing waits on a task that only the one thread could run.
#[tokio::test]
async fn one_worker_thread_serves_and_drains_on_the_current_thread_scheduler() {
    let receiver = OtlpReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "0s");
    let mut gateway = Binary::spawn_with_env(
        &config,
        dir.path(),
        "one-worker",
        &[
            ("STREAMGATE_WORKER_THREADS", "1"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint),
        ],
    );
    let channel = gateway.ready().await;
    let creates = (0..64).map(|i| {
        let mut streams = StreamServiceClient::new(channel.clone());
        async move {
            streams
                .create_stream(pb::CreateStreamRequest {
                    parent: "providers/local".into(),
                    stream_id: format!("w-{i}"),
                    ..Default::default()
                })
                .await
        }
    });
    for (i, created) in futures::future::join_all(creates)
        .await
        .into_iter()
        .enumerate()
    {
        let op = created
            .unwrap_or_else(|e| panic!("w-{i}: {e:?}"))
            .into_inner();
        let done = wait_on(&channel, &op).await;
        let Some(pb::operation::Result::Stream(stream)) = &done.result else {
            panic!("w-{i}: {done:?}");
        };
        assert_eq!(stream.state, State::Active as i32, "w-{i}");
    }

    gateway.signal("TERM");
    let status = gateway.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
    let log = std::fs::read_to_string(&gateway.log).unwrap();
    assert!(log.contains("workers=1"), "{log}");
    assert!(log.contains("stopped"), "{log}");
    let exported = receiver
        .spans()
        .iter()
        .filter(|s| s.name == "streamgate.v1.StreamService/CreateStream")
        .count();
    assert_eq!(exported, 64, "{log}");
}

#[test]
fn refuses_a_public_address_without_auth() {
    let output = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args(["--listen", "0.0.0.0:0"])
        .env_remove("STREAMGATE_CONFIG")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("without authentication"), "{stderr}");
}

#[test]
fn help_and_check_config() {
    let help = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--config",
        "--listen",
        "--log-format",
        "check-config",
        "probe",
    ] {
        assert!(text.contains(flag), "{flag} missing from --help:\n{text}");
    }

    let dir = tempfile::tempdir().unwrap();
    let good = write_config(dir.path(), "1s");
    let ok = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .arg("check-config")
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("local (local)"));

    for (text, complaint) in [
        ("[server]\nworkers = 3\n", "workers"),
        (
            "[[providers]]\nid = \"x\"\nkind = \"local\"\ncreate_delay = \"soon\"\n",
            "soon",
        ),
        (
            "[[providers]]\nid = \"x\"\nkind = \"local\"\ncolour = \"red\"\n",
            "colour",
        ),
        (
            "[[providers]]\nid = \"x\"\nkind = \"local\"\ndisabled_methods = [\"Fly\"]\n",
            "Fly",
        ),
        ("[[providers]]\nid = \"x\"\nkind = \"ftp\"\n", "ftp"),
    ] {
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, text).unwrap();
        let refused = Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .arg("check-config")
            .arg(&bad)
            .output()
            .unwrap();
        assert_eq!(refused.status.code(), Some(2), "{text}");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains(complaint), "{text}: {stderr}");
    }
}

#[test]
fn a_malformed_otlp_header_never_prints_its_value() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "1s");
    for args in [
        vec!["check-config", config.to_str().unwrap()],
        vec!["--config", config.to_str().unwrap()],
    ] {
        let refused = Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .args(&args)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
            .env("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key:sk-live-0123456789")
            .output()
            .unwrap();
        let printed = support::output_text(&refused);
        assert_eq!(refused.status.code(), Some(2), "{args:?}: {printed}");
        assert!(printed.contains("OTEL_EXPORTER_OTLP_HEADERS"), "{printed}");
        assert!(!printed.contains("sk-live"), "{args:?}: {printed}");
    }
}

#[tokio::test]
async fn json_logs_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "1s");
    let port = support::free_port();
    let log = dir.path().join("json.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .arg("--config")
        .arg(&config)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--log-format",
            "json",
        ])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let channel = support::connect(format!("127.0.0.1:{port}").parse().unwrap()).await;
    let _ = StreamServiceClient::new(channel)
        .get_stream(pb::GetStreamRequest {
            name: "providers/local/streams/none".into(),
            ..Default::default()
        })
        .await;
    child.kill().unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines.iter().any(|l| l["message"] == "serving"), "{text}");
}

/// `streamgate check-config FILE` in an environment holding only `env`, so that nothing of the
/// caller's (STREAMGATE_LISTEN, a store URL) changes the verdict.
fn check_config(path: &std::path::Path, env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .arg("check-config")
        .arg(path)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// The block scalar under `key:` of a YAML file (a ConfigMap's `streamgate.toml: |`), dedented.
fn yaml_block(path: &std::path::Path, key: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header = lines
        .find(|l| l.trim() == format!("{key}: |"))
        .unwrap_or_else(|| panic!("no `{key}: |` block in {}", path.display()));
    let outer = header.len() - header.trim_start().len();
    let body: Vec<&str> = lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > outer)
        .collect();
    let indent = body
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    body.iter()
        .map(|l| l.get(indent..).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn example_configs_load() {
    let examples = support::repo().join("deploy/examples");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let output = check_config(&path, &[]);
            assert!(
                output.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&output.stderr)
            );
            checked.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    assert!(checked.len() >= 6, "missing example configs: {checked:?}");

    // all.toml holds one instance of every kind.
    let all = check_config(&examples.join("all.toml"), &[]);
    let listed = String::from_utf8_lossy(&all.stdout);
    for kind in [
        "(local)",
        "(kinesis-video)",
        "(cloudfront)",
        "(cloudfront-streaming)",
        "(aliyun-vod)",
    ] {
        assert!(listed.contains(kind), "all.toml has no {kind}: {listed}");
    }
}

#[test]
fn deployment_configs_load() {
    let deploy = support::repo().join("deploy");
    let compose = check_config(&deploy.join("compose/streamgate.toml"), &[]);
    assert!(
        compose.status.success(),
        "{}",
        support::output_text(&compose)
    );

    // The Kubernetes ConfigMap's TOML, with the environment the Deployment gives it.
    let dir = tempfile::tempdir().unwrap();
    let embedded = dir.path().join("configmap.toml");
    std::fs::write(
        &embedded,
        yaml_block(&deploy.join("k8s/configmap.yaml"), "streamgate.toml"),
    )
    .unwrap();
    let env = [
        (
            "STREAMGATE_JWT_SECRET",
            "a-test-secret-of-at-least-32-bytes",
        ),
        (
            "STREAMGATE_STORE_URL",
            "postgres://streamgate:pw@streamgate-postgres:5432/streamgate",
        ),
    ];
    let k8s = check_config(&embedded, &env);
    assert!(k8s.status.success(), "{}", support::output_text(&k8s));
    assert!(
        String::from_utf8_lossy(&k8s.stdout).contains("3 provider instance(s)"),
        "{}",
        support::output_text(&k8s)
    );
    // The Secret's JWT key is what makes it valid: without it, the gateway refuses to start.
    let without_secret = check_config(&embedded, &env[1..]);
    assert_eq!(without_secret.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&without_secret.stderr).contains("STREAMGATE_JWT_SECRET"),
        "{}",
        support::output_text(&without_secret)
    );
}

/// `streamgate probe`, the container image's health check.
fn probe(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .arg("probe")
        .args(args)
        // The probe loads no configuration, not even a broken one.
        .env("STREAMGATE_CONFIG", "/nonexistent/streamgate.toml")
        .output()
        .unwrap()
}

#[tokio::test]
async fn probe_asks_grpc_health() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "1s");
    let mut server = Binary::spawn(&config, dir.path(), "probe");
    server.ready().await;
    let addr = server.addr.to_string();

    let serving = probe(&["--addr", &addr]);
    assert!(
        serving.status.success(),
        "{}",
        support::output_text(&serving)
    );
    assert_eq!(String::from_utf8_lossy(&serving.stdout).trim(), "SERVING");
    let service = probe(&["--addr", &addr, "--service", "streamgate.v1.StreamService"]);
    assert!(
        service.status.success(),
        "{}",
        support::output_text(&service)
    );

    let unknown = probe(&["--addr", &addr, "--service", "no.such.Service"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("NotFound"),
        "{}",
        support::output_text(&unknown)
    );

    server.signal("KILL");
    server.wait_exit(Duration::from_secs(10)).await;
    let down = probe(&["--addr", &addr, "--timeout", "1s"]);
    assert_eq!(down.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&down.stderr).contains("cannot connect"),
        "{}",
        support::output_text(&down)
    );
}
