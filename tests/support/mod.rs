//! The test harness: the gateway in-process through `server::run` on 127.0.0.1:0, or the real
//! binary as a child process; the helpers every suite shares to wait for, poll and follow an
//! operation (gRPC or grpcurl) and to read rich error details; an OTLP receiver and a metrics
//! scraper for the telemetry suite.

#![allow(dead_code)]

pub mod cloudfront_fake;
pub mod faultproxy;
pub mod fleet;
pub mod kvs_fake;
pub mod moto;
pub mod otlp;
pub mod pki;
pub mod postgres;
pub mod scrape;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use streamgate::config::Config;
use streamgate::pb::operation_service_client::OperationServiceClient;
use streamgate::pb::provider_service_client::ProviderServiceClient;
use streamgate::pb::stream_service_client::StreamServiceClient;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

/// A gateway running inside the test process.
pub struct TestServer {
    pub addr: SocketAddr,
    pub channel: Channel,
    dir: Option<TempDir>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<streamgate::error::Result<()>>>,
}

/// The `[[providers]]` part of a config with one `local` instance that creates in `delay`.
pub fn local_provider(id: &str, delay: &str) -> String {
    format!("[[providers]]\nid = \"{id}\"\nkind = \"local\"\ncreate_delay = \"{delay}\"\n")
}

impl TestServer {
    /// Starts a gateway with `providers` (TOML `[[providers]]` entries) and a fresh store.
    pub async fn start(providers: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, providers).await
    }

    /// Starts a gateway whose SQLite store lives in `dir`.
    pub async fn start_in(dir: TempDir, providers: &str) -> Self {
        let url = format!("sqlite://{}/sg.db", dir.path().display());
        Self::start_with_store(dir, &url, providers).await
    }

    /// Starts a gateway on the store at `url`.
    pub async fn start_with_store(dir: TempDir, url: &str, providers: &str) -> Self {
        Self::start_with_env(dir, url, providers, &[]).await
    }

    /// Starts a gateway with a fresh store and `env` as its environment (e.g. credentials).
    pub async fn start_env(providers: &str, env: &[(&str, &str)]) -> Self {
        Self::start_in_env(tempfile::tempdir().unwrap(), providers, env).await
    }

    /// Starts a gateway whose SQLite store lives in `dir`, with `env` as its environment
    /// (e.g. AWS credentials for an emulator).
    pub async fn start_in_env(dir: TempDir, providers: &str, env: &[(&str, &str)]) -> Self {
        let url = format!("sqlite://{}/sg.db", dir.path().display());
        Self::start_with_env(dir, &url, providers, env).await
    }

    /// Starts a gateway on the store at `url` with `env` as its environment.
    pub async fn start_with_env(
        dir: TempDir,
        url: &str,
        providers: &str,
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_text(dir, url, "", providers, env).await
    }

    /// Starts a gateway with `server` lines in its `[server]` table and `rest` (providers,
    /// `[auth]`, ...) after it, with a fresh store.
    pub async fn start_configured(server: &str, rest: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/sg.db", dir.path().display());
        Self::start_text(dir, &url, server, rest, env).await
    }

    /// Like [`TestServer::start_configured`], on the SQLite store in `dir` (for a restart).
    pub async fn start_configured_in(
        dir: TempDir,
        server: &str,
        rest: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let url = format!("sqlite://{}/sg.db", dir.path().display());
        Self::start_text(dir, &url, server, rest, env).await
    }

    async fn start_text(
        dir: TempDir,
        url: &str,
        server: &str,
        rest: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndrain_timeout = \"2s\"\n{server}\n[store]\nurl = \"{url}\"\n{rest}"
        );
        let mut config = Config::from_toml(&text).unwrap();
        config.environment = streamgate::config::Environment(
            env.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        config.validate().unwrap();
        let parts = streamgate::server::Parts::build(&config).unwrap_or_else(|e| panic!("{e}"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(streamgate::server::run(listener, parts, async {
            let _ = stopped.await;
        }));
        let channel = connect(addr).await;
        TestServer {
            addr,
            channel,
            dir: Some(dir),
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    pub fn streams(&self) -> StreamServiceClient<Channel> {
        StreamServiceClient::new(self.channel.clone())
    }

    pub fn operations(&self) -> OperationServiceClient<Channel> {
        OperationServiceClient::new(self.channel.clone())
    }

    pub fn providers(&self) -> ProviderServiceClient<Channel> {
        ProviderServiceClient::new(self.channel.clone())
    }

    pub fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel.clone())
    }

    /// Sends the shutdown signal and returns how `run` ended.
    pub async fn stop(mut self) -> streamgate::error::Result<()> {
        let _ = self.stop.take().unwrap().send(());
        self.handle.take().unwrap().await.unwrap()
    }

    /// Stops the server and hands back its directory, store included, for a restart.
    pub async fn stop_keeping_dir(mut self) -> TempDir {
        let dir = self.dir.take().unwrap();
        let _ = self.stop.take().unwrap().send(());
        self.handle.take().unwrap().await.unwrap().unwrap();
        dir
    }

    /// Signals shutdown without waiting; returns the task to await.
    pub fn begin_stop(&mut self) -> JoinHandle<streamgate::error::Result<()>> {
        let _ = self.stop.take().unwrap().send(());
        self.handle.take().unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A channel to `addr`, retried until the server accepts.
pub async fn connect(addr: SocketAddr) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
        {
            Ok(channel) => return channel,
            Err(e) if Instant::now() > deadline => panic!("cannot connect to {addr}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Waits (up to 30 s) until `op` is done, and returns it as it is then.
pub async fn wait(
    server: &TestServer,
    op: &streamgate::pb::Operation,
) -> streamgate::pb::Operation {
    wait_on(&server.channel, op).await
}

/// Like [`wait`], through any channel (e.g. to one of several binaries).
pub async fn wait_on(
    channel: &Channel,
    op: &streamgate::pb::Operation,
) -> streamgate::pb::Operation {
    OperationServiceClient::new(channel.clone())
        .wait_operation(streamgate::pb::WaitOperationRequest {
            name: op.name.clone(),
            timeout: Some(prost_types::Duration {
                seconds: 30,
                nanos: 0,
            }),
        })
        .await
        .unwrap()
        .into_inner()
}

/// The operation once done: `op` itself when it already is, else waited for (up to 30 s).
pub async fn done(server: &TestServer, op: streamgate::pb::Operation) -> streamgate::pb::Operation {
    if op.done { op } else { wait(server, &op).await }
}

/// The operation `name` as it is now.
pub async fn get_op(server: &TestServer, name: &str) -> streamgate::pb::Operation {
    get_op_on(&server.channel, name).await
}

/// Like [`get_op`], through any channel (e.g. to a binary).
pub async fn get_op_on(channel: &Channel, name: &str) -> streamgate::pb::Operation {
    OperationServiceClient::new(channel.clone())
        .get_operation(streamgate::pb::GetOperationRequest {
            name: name.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// The step an operation is at.
pub fn step(op: &streamgate::pb::Operation) -> String {
    op.metadata.as_ref().unwrap().step.clone()
}

/// Polls the operation `name` through `channel` until `ready` holds of it (at most 20 s), and
/// returns it as it is then.
pub async fn until_on(
    channel: &Channel,
    name: &str,
    ready: impl Fn(&streamgate::pb::Operation) -> bool,
) -> streamgate::pb::Operation {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let op = get_op_on(channel, name).await;
        if ready(&op) {
            return op;
        }
        assert!(Instant::now() < deadline, "never there: {op:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the operation `name` is at step `wanted`.
pub async fn until_step(
    server: &TestServer,
    name: &str,
    wanted: &str,
) -> streamgate::pb::Operation {
    until_on(&server.channel, name, |op| step(op) == wanted).await
}

/// The code, ErrorInfo reason and message of a failed operation.
pub fn failure(op: &streamgate::pb::Operation) -> (tonic::Code, String, String) {
    let status = op_error(op);
    (status.code(), reason(&status), status.message().to_string())
}

/// The status of a failed operation, rebuilt with its details so they can be read.
pub fn op_error(op: &streamgate::pb::Operation) -> tonic::Status {
    let Some(streamgate::pb::operation::Result::Error(status)) = &op.result else {
        panic!("the operation did not fail: {op:?}");
    };
    tonic::Status::with_details(
        tonic::Code::from(status.code),
        status.message.clone(),
        prost::Message::encode_to_vec(status).into(),
    )
}

/// A metadata value of a status's ErrorInfo (empty when absent).
pub fn info_metadata(status: &tonic::Status, key: &str) -> String {
    status
        .get_error_details()
        .error_info()
        .and_then(|i| i.metadata.get(key).cloned())
        .unwrap_or_default()
}

/// The ErrorInfo reason of a status.
pub fn reason(status: &tonic::Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"))
}

/// The fields named by the BadRequest violations of a status.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

/// Test credentials for AWS peers (moto and the fakes accept any).
pub const AWS_ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "AKIDSTREAMGATETEST"),
    ("AWS_SECRET_ACCESS_KEY", "streamgate-test-secret"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// A free port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real `streamgate` binary as a child process.
pub struct Binary {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl Binary {
    /// Starts the binary with `config` (a file) on a free port, logging to `dir/NAME.log`.
    pub fn spawn(config: &Path, dir: &Path, name: &str) -> Self {
        Self::spawn_with_env(config, dir, name, &[])
    }

    /// Like [`Binary::spawn`], with `env` added to the child's environment.
    pub fn spawn_with_env(config: &Path, dir: &Path, name: &str, env: &[(&str, &str)]) -> Self {
        Self::spawn_program(
            Path::new(env!("CARGO_BIN_EXE_streamgate")),
            config,
            dir,
            name,
            env,
        )
    }

    /// Like [`Binary::spawn_with_env`], running `program` (a build of the gateway).
    pub fn spawn_program(
        program: &Path,
        config: &Path,
        dir: &Path,
        name: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(program)
            .arg("--config")
            .arg(config)
            .arg("--listen")
            .arg(addr.to_string())
            .env_remove("STREAMGATE_CONFIG")
            .env_remove("STREAMGATE_LISTEN")
            .envs(env.iter().copied())
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Binary { child, addr, log }
    }

    /// Waits until overall health is SERVING; returns the channel.
    pub async fn ready(&mut self) -> Channel {
        let endpoint = Channel::from_shared(format!("http://{}", self.addr)).unwrap();
        self.ready_on(endpoint).await
    }

    /// Like [`Binary::ready`], over TLS: `ca` verifies the server, `identity` is the client
    /// certificate, if any.
    pub async fn ready_tls(&mut self, ca: &Path, identity: Option<&pki::Pair>) -> Channel {
        let mut tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(
                std::fs::read(ca).unwrap(),
            ))
            .domain_name("localhost");
        if let Some(pair) = identity {
            tls = tls.identity(tonic::transport::Identity::from_pem(
                std::fs::read(&pair.cert).unwrap(),
                std::fs::read(&pair.key).unwrap(),
            ));
        }
        let endpoint = Channel::from_shared(format!("https://{}", self.addr))
            .unwrap()
            .tls_config(tls)
            .unwrap();
        self.ready_on(endpoint).await
    }

    async fn ready_on(&mut self, endpoint: tonic::transport::Endpoint) -> Channel {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "streamgate exited with {status}: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if let Ok(channel) = endpoint.connect().await {
                let serving = HealthClient::new(channel.clone())
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .map(|r| r.into_inner().status == ServingStatus::Serving as i32)
                    .unwrap_or(false);
                if serving {
                    return channel;
                }
            }
            assert!(Instant::now() < deadline, "streamgate did not become ready");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Sends a signal (e.g. "TERM", "KILL") to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, at most `bound`. Async, so that the test's own client
    /// connections keep running meanwhile (a blocked runtime would never answer the server's
    /// graceful-shutdown GOAWAY ping, and hold its drain until the bound).
    pub async fn wait_exit(&mut self, bound: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "streamgate did not exit in {bound:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a child process printed, stdout then stderr.
pub fn output_text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Calls `streamgate.v1.{method}` on `addr` with grpcurl and parses its JSON answer (the
/// call must succeed).
pub fn grpcurl_json(addr: &str, method: &str, body: &str) -> serde_json::Value {
    let output = grpcurl(&["-d", body, addr, &format!("streamgate.v1.{method}")]);
    assert!(
        output.status.success(),
        "{method}: {}",
        output_text(&output)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Reads the operation with grpcurl until it is done (at most 30 s), collecting the steps it
/// shows on the way.
pub fn grpcurl_follow(addr: &str, operation: &str, steps: &mut Vec<String>) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let op = grpcurl_json(
            addr,
            "OperationService/GetOperation",
            &format!(r#"{{"name": "{operation}"}}"#),
        );
        let step = op["metadata"]["step"].as_str().unwrap().to_string();
        if steps.last() != Some(&step) {
            steps.push(step);
        }
        if op["done"] == true {
            return op;
        }
        assert!(Instant::now() < deadline, "not done: {op}");
        std::thread::sleep(Duration::from_millis(40));
    }
}

/// Runs grpcurl 1.8.6 from the test venv in plaintext mode.
pub fn grpcurl(args: &[&str]) -> std::process::Output {
    let mut all = vec!["-plaintext"];
    all.extend_from_slice(args);
    grpcurl_tls(&all)
}

/// Runs grpcurl 1.8.6 from the test venv with exactly `args` (TLS unless `-plaintext`).
pub fn grpcurl_tls(args: &[&str]) -> std::process::Output {
    Command::new(venv_tool("grpcurl"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("grpcurl: {e}"))
}

/// A tool of the test venv (`scripts/test` installs it): `$STREAMGATE_VENV/bin/NAME`, else
/// `.venv/bin/NAME` in the repository. Fails loudly when missing: these suites never skip.
pub fn venv_tool(name: &str) -> PathBuf {
    let venv = std::env::var_os("STREAMGATE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv"));
    let path = venv.join("bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/test, which installs the test peers into .venv",
        path.display()
    );
    path
}
