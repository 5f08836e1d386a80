//! The `aliyun-vod` provider: the media streams (transcoded outputs) of ApsaraVideo VOD
//! videos, named `providers/{p}/videos/{VideoId}/streams/{JobId}`, over the VOD RPC API
//! (version 2017-03-21) signed by hand: there is no Rust SDK.
//!
//! - GetStream and ListStreams (parent `providers/{p}/videos/{video}`): GetPlayInfo with
//!   `ResultType=Multiple`, every stream of the video (`Normal` → ACTIVE, `Invisible` →
//!   DISABLED); a video without streams (`InvalidVideo.NoneStream`) lists none.
//! - DeleteStream: DeleteStream(VideoId, JobIds).
//! - BatchDeleteStreams: names grouped by video, at most 20 job ids per DeleteStream call,
//!   the fewest calls possible, one truthful result per name (see `backend.rs`).
//! - GetStreamEndpoints (PLAYBACK): the stream's PlayURL from GetPlayInfo, with `AuthTimeout`
//!   = the requested lifetime (it counts where URL authentication is on).
//! - CreateStream, UpdateStream and WatchStream are not in the capability: VOD makes streams
//!   by transcoding, has nothing to update, and announces no changes to watch.
//!
//! # An unknown job id in a batch
//!
//! The DeleteStream reference (help.aliyun.com/document_detail/62130, "DeleteStream - 删除媒体流";
//! alibabacloud.com/help/en/vod/developer-reference/api-vod-2017-03-21-deletestream) lists
//! `InvalidStream.NotFound` (404, "The stream does not exist.") among its errors, and a
//! success answer carries only a `RequestId`. It does not say which id was not found, nor
//! whether the other ids of the same call were deleted before the error. The adapter therefore
//! relies on neither: it sends only ids GetPlayInfo listed when the batch began (an unknown
//! name fails with STREAM_NOT_FOUND without being sent), and when a call still answers
//! `InvalidStream.NotFound` it asks GetPlayInfo which of the call's ids are gone (reported
//! deleted) and sends the rest again. The tests run the fake in both ways VOD could behave
//! (refuse the whole call; delete the known ids and then refuse) and get the same results.
//!
//! # Credentials, limits, errors
//!
//! The entry's `access_key_id` / `access_key_secret` / `security_token`, else
//! `ALIBABA_CLOUD_ACCESS_KEY_ID`, `ALIBABA_CLOUD_ACCESS_KEY_SECRET` and
//! `ALIBABA_CLOUD_SECURITY_TOKEN` (STS, sent as `SecurityToken`). The endpoint is
//! `https://{host}/` with the region's host from the official SDK's endpoint map (`cn-hangzhou`
//! → `vod.cn-shanghai.aliyuncs.com`, several regions → `vod.aliyuncs.com`, the rest
//! `vod.{region}.aliyuncs.com`), or `endpoint_url`. Outbound calls stay under
//! `delete_stream_qps` (default 50) and `get_play_info_qps` (default 360), the account quotas,
//! each try counted. Temporary errors (DeleteStreamFailed, Throttling*, SignatureNonceUsed) are
//! retried with a fresh nonce and timestamp inside the caller's deadline.
//!
//! - `config.rs`: the kind-specific keys and the credentials.
//! - `backend.rs`: the [`Provider`](crate::providers::Provider) impl: reads, prechecks, and
//!   the steps of deletes and batch deletes.
//! - `core.rs`: the RPC calls over reqwest, on the instance's
//!   [`CallPath`](crate::providers::call::CallPath).
//! - `endpoints.rs`: the playback endpoint of a stream.
//! - `hosts.rs`: the VOD API host of each region.
//! - `signer.rs`: signature V1 (HMAC-SHA1).
//! - `error.rs`: the adapter's errors and `parse_error`.

mod backend;
mod config;
mod core;
mod endpoints;
mod error;
mod hosts;
mod signer;

pub use backend::AliyunVodProvider;
pub use config::AliyunVodSettings;
pub use hosts::api_host;

use crate::providers::KindEntry;

/// The kind name in the configuration.
pub const KIND: &str = "aliyun-vod";

/// The kind's entry in [`KINDS`](crate::providers::KINDS). Only the entry's keys are checked
/// here; the credentials are resolved when the instance is built (`check-config` does not
/// require them).
pub const ENTRY: KindEntry = KindEntry {
    names: &[KIND],
    prepare: |config| Ok(Box::new(AliyunVodSettings::parse(config)?)),
};
