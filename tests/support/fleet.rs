//! A fleet for the tests of issue 19: several replicas of the gateway (child processes) on one
//! throwaway PostgreSQL, with a `kinesis-video` provider on the KVS wire-level fake, made to
//! enforce KVS's published quotas, and a `local` one.
//!
//! The replicas run an optimized build when `STREAMGATE_RELEASE_BIN` names one (`scripts/test`
//! builds the `release-test` profile, the release build without LTO, and sets it), else the
//! test build of the binary. Replica `i` signs its KVS calls with the access key
//! [`Fleet::access_key`]`(i)`, so the fake's records say which replica made each call
//! (`Recorded.access_key`).

use std::path::{Path, PathBuf};

use tempfile::TempDir;
use tonic::transport::Channel;

use super::Binary;
use super::kvs_fake::{KvsFake, RunningKvsFake};
use super::postgres::Postgres;

/// The gateway build the replicas run, and whether it is the release build.
pub fn program() -> (PathBuf, bool) {
    match std::env::var_os("STREAMGATE_RELEASE_BIN") {
        Some(path) => (PathBuf::from(path), true),
        None => (PathBuf::from(env!("CARGO_BIN_EXE_streamgate")), false),
    }
}

/// What the replicas' configuration adds to the common one.
#[derive(Clone, Debug, Default)]
pub struct Extra {
    /// Lines of the `[server]` table.
    pub server: String,
    /// Lines of the `[store]` table.
    pub store: String,
    /// Lines of the `kvs` provider's table.
    pub kvs: String,
    /// Lines of the `local` provider's table.
    pub local: String,
    /// Whole tables appended at the end.
    pub tables: String,
}

/// Several replicas on one PostgreSQL and one KVS fake.
pub struct Fleet {
    /// The replicas, in start order; `None` once stopped by the test.
    pub replicas: Vec<Option<Binary>>,
    /// A channel to each replica.
    pub channels: Vec<Channel>,
    /// The KVS fake, enforcing the published quotas.
    pub kvs: RunningKvsFake,
    /// The shared store.
    pub postgres: Postgres,
    /// The replicas' common configuration file.
    pub config: PathBuf,
    dir: TempDir,
}

impl Fleet {
    /// Starts PostgreSQL, the fake and `n` replicas configured with `extra`; returns when every
    /// replica is SERVING.
    pub async fn start(n: usize, extra: &Extra) -> Fleet {
        let (program, release) = program();
        eprintln!(
            "fleet of {n} replicas running {} ({})",
            program.display(),
            if release {
                "release build"
            } else {
                "test build"
            }
        );
        let postgres = Postgres::start();
        let kvs = KvsFake::start().await;
        kvs.fake.enforce_quotas();
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), &postgres.url, &kvs.url, extra);
        let mut fleet = Fleet {
            replicas: Vec::new(),
            channels: Vec::new(),
            kvs,
            postgres,
            config,
            dir,
        };
        for i in 0..n {
            fleet.add().await;
            assert_eq!(fleet.channels.len(), i + 1);
        }
        fleet
    }

    /// The access key replica `i` signs its KVS calls with.
    pub fn access_key(i: usize) -> String {
        format!("AKIAREPLICA{i:03}")
    }

    /// Starts one more replica; returns its index once it is SERVING.
    pub async fn add(&mut self) -> usize {
        let i = self.replicas.len();
        let key = Self::access_key(i);
        let mut replica = Binary::spawn_program(
            &program().0,
            &self.config,
            self.dir.path(),
            &format!("replica-{i}"),
            &[
                ("AWS_ACCESS_KEY_ID", key.as_str()),
                ("AWS_SECRET_ACCESS_KEY", "streamgate-test-secret"),
                ("AWS_EC2_METADATA_DISABLED", "true"),
            ],
        );
        let channel = replica.ready().await;
        self.replicas.push(Some(replica));
        self.channels.push(channel);
        i
    }

    /// The fake's state.
    pub fn fake(&self) -> &KvsFake {
        &self.kvs.fake
    }

    /// Kills replica `i` (SIGKILL): it stops at once, holding whatever it held.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut replica) = self.replicas[i].take() {
            let _ = replica.child.kill();
            let _ = replica.child.wait();
        }
    }

    /// The log of replica `i` so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("replica-{i}.log")))
            .unwrap_or_default()
    }
}

/// The replicas' configuration: the shared store, `kvs` on the fake, `local`, and `extra`.
fn write_config(dir: &Path, store: &str, kvs: &str, extra: &Extra) -> PathBuf {
    let path = dir.join("replica.toml");
    let Extra {
        server,
        store: store_extra,
        kvs: kvs_extra,
        local,
        tables,
    } = extra;
    std::fs::write(
        &path,
        format!(
            "[server]\ndrain_timeout = \"2s\"\n{server}\n\
             [store]\nurl = \"{store}\"\n{store_extra}\n\
             [[providers]]\nid = \"kvs\"\nkind = \"kinesis-video\"\nregion = \"us-east-1\"\n\
             endpoint_url = \"{kvs}\"\n{kvs_extra}\n\
             [[providers]]\nid = \"local\"\nkind = \"local\"\n{local}\n\
             {tables}\n"
        ),
    )
    .unwrap();
    path
}
