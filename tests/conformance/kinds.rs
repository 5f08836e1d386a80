//! The one table of kinds the conformance suite runs against: for each kind, how to start its
//! peer (fake, emulator, or none), its `[[providers]]` entry, how to seed an existing stream,
//! which name is missing and what the provider answers then, how to make the peer throttle or
//! answer a 5xx, how to count the requests it received, a change to make a stream's etag stale,
//! a request the kind's validation refuses, and the long-running workflow a kill -9 interrupts.

use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use streamgate::pb;
use support::cloudfront_fake::StreamingFake;
use support::kvs_fake::{KvsFake, RunningKvsFake, Throttle};
use support::moto::Moto;
use support::{AWS_ENV, TestServer};

use crate::proxy::Proxy;
use crate::support;
use crate::vod::FakeVod;

/// A provider kind under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Local,
    KinesisVideo,
    CloudFront,
    CloudFrontStreaming,
    AliyunVod,
}

impl Kind {
    /// Every kind, in the table's column order.
    pub const ALL: [Kind; 5] = [
        Kind::Local,
        Kind::KinesisVideo,
        Kind::CloudFront,
        Kind::CloudFrontStreaming,
        Kind::AliyunVod,
    ];

    /// The kind as configs and ProviderService name it.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Local => "local",
            Kind::KinesisVideo => "kinesis-video",
            Kind::CloudFront => "cloudfront",
            Kind::CloudFrontStreaming => "cloudfront-streaming",
            Kind::AliyunVod => "aliyun-vod",
        }
    }

    /// The instance id in the config.
    pub fn id(self) -> &'static str {
        match self {
            Kind::Local => "local",
            Kind::KinesisVideo => "kvs",
            Kind::CloudFront => "web",
            Kind::CloudFrontStreaming => "rtmp",
            Kind::AliyunVod => "vod",
        }
    }

    /// Whether the kind calls a provider at all (`local` keeps its streams in the store).
    pub fn has_provider(self) -> bool {
        self != Kind::Local
    }
}

/// What a kind's peer is shared across cases: moto is slow to start, so one serves every case
/// of the `cloudfront` kind (each case behind its own [`Proxy`], on its own distributions).
#[derive(Default)]
pub struct Shared {
    moto: Option<Arc<Moto>>,
}

impl Shared {
    /// The shared peers `kind` needs, started.
    pub fn start(kind: Kind) -> Self {
        Shared {
            moto: (kind == Kind::CloudFront).then(|| Arc::new(Moto::start())),
        }
    }
}

/// A kind's peer, fresh for one case.
pub enum Peer {
    None,
    Kvs(RunningKvsFake),
    Moto(Arc<Moto>, Proxy),
    Streaming(StreamingFake),
    Vod(FakeVod),
}

const VOD_KEY_ID: &str = "LTAI5tConformanceKey";
const VOD_SECRET: &str = "conformance-secret-9Xw2";
/// The video whose streams the VOD cases use.
const VOD_VIDEO: &str = "v1";

/// One kind with a fresh peer: everything a case needs to drive it.
pub struct Subject {
    pub kind: Kind,
    pub peer: Peer,
}

/// A request the kind's validation refuses.
pub enum BadRequest {
    Create(Box<pb::CreateStreamRequest>),
    Delete(pb::DeleteStreamRequest),
}

impl Subject {
    /// A fresh peer for `kind` (on the shared moto for `cloudfront`).
    pub async fn start(kind: Kind, shared: &Shared) -> Self {
        let peer = match kind {
            Kind::Local => Peer::None,
            Kind::KinesisVideo => Peer::Kvs(KvsFake::start().await),
            Kind::CloudFront => {
                let moto = Arc::clone(shared.moto.as_ref().expect("moto"));
                let proxy = Proxy::start(&moto.url()).await;
                Peer::Moto(moto, proxy)
            }
            Kind::CloudFrontStreaming => Peer::Streaming(StreamingFake::start(0).await),
            Kind::AliyunVod => {
                let fake = FakeVod::start().await;
                fake.add_key(VOD_KEY_ID, VOD_SECRET, None);
                Peer::Vod(fake)
            }
        };
        Subject { kind, peer }
    }

    /// The `[[providers]]` entry of the kind's instance on this peer, with short polls.
    pub fn providers(&self) -> String {
        let id = self.kind.id();
        let kind = self.kind.label();
        let head = format!("[[providers]]\nid = \"{id}\"\nkind = \"{kind}\"\n");
        match &self.peer {
            Peer::None => format!("{head}create_delay = \"0s\"\n"),
            Peer::Kvs(fake) => format!(
                "{head}region = \"us-east-1\"\nendpoint_url = \"{}\"\n\
                 creation_poll_interval = \"20ms\"\nwatch_poll_interval = \"50ms\"\n",
                fake.url
            ),
            Peer::Moto(_, proxy) => format!(
                "{head}endpoint_url = \"{}\"\ndeploy_poll_interval = \"50ms\"\n",
                proxy.url()
            ),
            Peer::Streaming(fake) => format!(
                "{head}endpoint_url = \"{}\"\ndeploy_poll_interval = \"50ms\"\n",
                fake.url()
            ),
            Peer::Vod(fake) => format!(
                "{head}region = \"cn-shanghai\"\nendpoint_url = \"{}\"\n\
                 access_key_id = \"{VOD_KEY_ID}\"\naccess_key_secret = \"{VOD_SECRET}\"\n",
                fake.url()
            ),
        }
    }

    /// The environment the gateway needs for this kind (credentials of the AWS kinds).
    pub fn env(&self) -> &'static [(&'static str, &'static str)] {
        match self.kind {
            Kind::KinesisVideo | Kind::CloudFront | Kind::CloudFrontStreaming => &AWS_ENV,
            Kind::Local | Kind::AliyunVod => &[],
        }
    }

    /// A gateway (in-process, fresh store) on this peer.
    pub async fn gateway(&self) -> TestServer {
        TestServer::start_env(&self.providers(), self.env()).await
    }

    /// The parent of this kind's streams.
    pub fn parent(&self) -> String {
        match self.kind {
            Kind::AliyunVod => format!("providers/vod/videos/{VOD_VIDEO}"),
            kind => format!("providers/{}", kind.id()),
        }
    }

    /// The name a stream `id` has under [`Subject::parent`].
    pub fn name(&self, id: &str) -> String {
        format!("{}/streams/{id}", self.parent())
    }

    /// Makes an existing, ready stream that `server` can see; returns its name. `tag` makes it
    /// distinct from the others of the case (it becomes part of the id where the kind lets the
    /// caller choose it).
    pub async fn seed(&self, server: &TestServer, tag: &str) -> String {
        match &self.peer {
            Peer::None => {
                created(
                    server,
                    &self.parent(),
                    &format!("seed-{tag}"),
                    local_stream(),
                )
                .await
            }
            Peer::Kvs(fake) => {
                fake.fake.add_stream(&format!("seed-{tag}"));
                self.name(&format!("seed-{tag}"))
            }
            Peer::Moto(..) => {
                created(
                    server,
                    &self.parent(),
                    &format!("seed-{tag}"),
                    web_stream(tag),
                )
                .await
            }
            Peer::Streaming(fake) => {
                let id = format!("ESEED{}", tag.to_uppercase());
                fake.add(&id, true, "seeded");
                self.name(&id)
            }
            Peer::Vod(fake) => {
                let job = format!("seed-{tag}");
                let mut jobs = fake.streams(VOD_VIDEO).unwrap_or_default();
                jobs.push(job.clone());
                let jobs: Vec<&str> = jobs.iter().map(String::as_str).collect();
                fake.add_video(VOD_VIDEO, &jobs);
                self.name(&job)
            }
        }
    }

    /// The name of a stream that does not exist, the ErrorInfo reason a read of it answers,
    /// and the provider code the peer answers it with (none for `local`).
    pub fn missing(&self) -> (String, &'static str, Option<&'static str>) {
        let stream = "STREAM_NOT_FOUND";
        match self.kind {
            Kind::Local => (self.name("absent"), stream, None),
            Kind::KinesisVideo => (
                self.name("absent"),
                stream,
                Some("ResourceNotFoundException"),
            ),
            Kind::CloudFront => (
                self.name("EABSENT00000"),
                stream,
                Some("NoSuchDistribution"),
            ),
            Kind::CloudFrontStreaming => (
                self.name("EABSENT00000"),
                stream,
                Some("NoSuchStreamingDistribution"),
            ),
            // A stream is missing when its video is: VOD answers no code for a job a video
            // lacks (GetPlayInfo succeeds), only for the video itself.
            Kind::AliyunVod => (
                "providers/vod/videos/absent/streams/j1".to_string(),
                "VIDEO_NOT_FOUND",
                Some("InvalidVideo.NotFound"),
            ),
        }
    }

    /// The name of a stream that does not exist under [`Subject::parent`] (a batch takes one
    /// parent).
    pub fn absent_sibling(&self) -> String {
        match self.kind {
            Kind::CloudFront | Kind::CloudFrontStreaming => self.name("EABSENT00000"),
            _ => self.name("absent"),
        }
    }

    /// How many requests the peer has received (0 for `local`).
    pub fn requests(&self) -> usize {
        match &self.peer {
            Peer::None => 0,
            Peer::Kvs(fake) => fake.fake.requests().len(),
            Peer::Moto(_, proxy) => proxy.requests(),
            Peer::Streaming(fake) => fake.requests().len(),
            Peer::Vod(fake) => fake.requests().len(),
        }
    }

    /// How many times the peer was asked for the read GetStream makes first.
    pub fn reads(&self) -> usize {
        match &self.peer {
            Peer::None => 0,
            Peer::Kvs(fake) => fake.fake.requests_of("describeStream").len(),
            Peer::Moto(_, proxy) => proxy.gets(),
            Peer::Streaming(fake) => fake.requests().iter().filter(|r| r.method == "GET").count(),
            Peer::Vod(fake) => fake.calls("GetPlayInfo").len(),
        }
    }

    /// Answers the next `times` reads with the provider's throttling error; returns its code.
    pub fn throttle_reads(&self, times: usize) -> &'static str {
        match &self.peer {
            Peer::None => unreachable!("local has no provider"),
            Peer::Kvs(fake) => {
                fake.fake.throttle("describeStream", Throttle::Next(times));
                "ClientLimitExceededException"
            }
            Peer::Moto(_, proxy) => {
                proxy.fail_next(Method::GET, 400, "Throttling", times);
                "Throttling"
            }
            Peer::Streaming(fake) => {
                for _ in 0..times {
                    fake.fail_next("GET", 400, "Throttling");
                }
                "Throttling"
            }
            Peer::Vod(fake) => {
                fake.fail_next("GetPlayInfo", "Throttling.User", times);
                "Throttling.User"
            }
        }
    }

    /// Answers the next read with a 5xx.
    pub fn fail_read_5xx(&self) {
        match &self.peer {
            Peer::None => unreachable!("local has no provider"),
            Peer::Kvs(fake) => fake
                .fake
                .fail_next("describeStream", 500, "InternalFailure"),
            Peer::Moto(_, proxy) => proxy.fail_next(Method::GET, 503, "ServiceUnavailable", 1),
            Peer::Streaming(fake) => fake.fail_next("GET", 503, "ServiceUnavailable"),
            Peer::Vod(fake) => fake.fail_next("GetPlayInfo", "ServiceUnavailable", 1),
        }
    }

    /// An update of `name` that changes it (and so its etag), guarded by `etag`.
    pub fn change(&self, name: &str, etag: &str, n: u32) -> pb::UpdateStreamRequest {
        let (stream, path) = match self.kind {
            Kind::CloudFront | Kind::CloudFrontStreaming => (
                pb::Stream {
                    details: Some(pb::stream::Details::Cloudfront(
                        pb::CloudFrontStreamDetails {
                            comment: format!("change {n}"),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                },
                "cloudfront.comment",
            ),
            _ => (
                pb::Stream {
                    device_name: format!("device-{n}"),
                    ..Default::default()
                },
                "device_name",
            ),
        };
        pb::UpdateStreamRequest {
            stream: Some(pb::Stream {
                name: name.to_string(),
                etag: etag.to_string(),
                ..stream
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec![path.to_string()],
            }),
            ..Default::default()
        }
    }

    /// The kind's stream id pattern as its capability states it, and an id outside it that
    /// the gateway's generic name check would let through where the kind is stricter.
    pub fn outside_pattern(&self) -> (&'static str, &'static str) {
        match self.kind {
            Kind::CloudFront | Kind::CloudFrontStreaming => ("[A-Z0-9]{1,256}", "lower-case"),
            _ => ("[a-zA-Z0-9_.-]{1,256}", "tilde~id"),
        }
    }

    /// The etag read before a change (`before`), now stale, given the one after (`after`).
    /// moto keeps a distribution's ETag through changes, unlike CloudFront; there, the stale
    /// etag is another well-formed one.
    pub fn stale_etag(&self, before: &str, after: &str) -> String {
        match self.peer {
            Peer::Moto(..) => {
                assert_eq!(before, after, "moto now issues new ETags: drop this");
                "E2STALEETAG000".to_string()
            }
            _ => {
                assert_ne!(before, after, "a change issues a new etag");
                before.to_string()
            }
        }
    }

    /// A request the kind's own validation refuses, and the field it names.
    pub fn bad_request(&self) -> (BadRequest, &'static str) {
        match self.kind {
            Kind::Local | Kind::KinesisVideo => (
                BadRequest::Create(Box::new(pb::CreateStreamRequest {
                    parent: self.parent(),
                    stream_id: "too-long-kept".into(),
                    stream: Some(pb::Stream {
                        data_retention_hours: 87_601,
                        ..local_stream()
                    }),
                    ..Default::default()
                })),
                "stream.data_retention_hours",
            ),
            Kind::CloudFront => (
                BadRequest::Create(Box::new(pb::CreateStreamRequest {
                    parent: self.parent(),
                    stream_id: "edge".into(),
                    stream: Some(pb::Stream {
                        data_retention_hours: 1,
                        ..web_stream("bad")
                    }),
                    ..Default::default()
                })),
                "stream.data_retention_hours",
            ),
            Kind::CloudFrontStreaming => (
                BadRequest::Delete(pb::DeleteStreamRequest {
                    name: self.name("ESEED1"),
                    etag: "E".repeat(300),
                    ..Default::default()
                }),
                "etag",
            ),
            Kind::AliyunVod => (
                BadRequest::Delete(pb::DeleteStreamRequest {
                    name: self.name("seed-1"),
                    etag: "abc".into(),
                    ..Default::default()
                }),
                "etag",
            ),
        }
    }
}

/// The stream body of a `local` or `kinesis-video` create.
pub fn local_stream() -> pb::Stream {
    pb::Stream {
        media_type: "video/h264".into(),
        data_retention_hours: 24,
        ..Default::default()
    }
}

/// The stream body of a `cloudfront` create (an S3 origin).
pub fn web_stream(tag: &str) -> pb::Stream {
    pb::Stream {
        details: Some(pb::stream::Details::Cloudfront(
            pb::CloudFrontStreamDetails {
                comment: format!("seed {tag}"),
                origin: Some(pb::CloudFrontOrigin {
                    r#type: pb::cloud_front_origin::Type::S3 as i32,
                    domain_name: "media.s3.amazonaws.com".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

/// Creates `id` under `parent` through the gateway and returns the created stream's name
/// (CloudFront names its distributions itself).
async fn created(server: &TestServer, parent: &str, id: &str, stream: pb::Stream) -> String {
    let op = server
        .streams()
        .create_stream(pb::CreateStreamRequest {
            parent: parent.to_string(),
            stream_id: id.to_string(),
            stream: Some(stream),
            request_id: format!("seed-{id}"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    match support::done(server, op).await.result {
        Some(pb::operation::Result::Stream(stream)) => stream.name,
        other => panic!("seeding {id}: {other:?}"),
    }
}

/// How long a case may take before it counts as hung.
pub const CASE_BOUND: Duration = Duration::from_secs(40);
