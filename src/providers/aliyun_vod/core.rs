//! The VOD RPC calls of one instance over reqwest: common parameters, a fresh nonce and
//! timestamp per try, signing (`signer.rs`), and decoding of the answers; each call on the
//! instance's [`CallPath`] (the account's QPS quotas as outbound limits, taken per try; retries
//! inside the caller's deadline; one provider-call span). The batch logic lives in
//! `backend.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::config::{AliyunVodSettings, Credentials};
use super::error::{ErrorBody, VodError, parse_error};
use super::signer;
use crate::error::{Error, Kind, Result};
use crate::providers::call::CallPath;
use crate::providers::limits::OutboundLimits;
use crate::store::SharedBudgets;

/// The VOD API version.
const VERSION: &str = "2017-03-21";
/// The action that deletes streams.
const DELETE_STREAM: &str = "DeleteStream";
/// The action that lists a video's streams.
const GET_PLAY_INFO: &str = "GetPlayInfo";
/// The longest a single HTTP exchange may take when the caller set no shorter deadline.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One media stream of a video, as GetPlayInfo lists it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct PlayInfo {
    pub job_id: String,
    pub definition: String,
    pub format: String,
    pub stream_type: String,
    /// `Normal` (the latest stream of its definition and format) or `Invisible`.
    pub status: String,
    pub creation_time: String,
    pub modification_time: String,
    /// The playback URL; with URL authentication on, it carries `auth_key` and expires.
    #[serde(rename = "PlayURL")]
    pub play_url: String,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct PlayInfoList {
    #[serde(rename = "PlayInfo")]
    play_info: Vec<PlayInfo>,
}

#[derive(Deserialize)]
struct GetPlayInfoResponse {
    #[serde(rename = "RequestId", default)]
    request_id: Option<String>,
    #[serde(rename = "PlayInfoList", default)]
    play_info_list: PlayInfoList,
}

/// The streams of one video, and the request that listed them.
#[derive(Debug)]
pub(super) struct VideoStreams {
    pub request_id: Option<String>,
    pub streams: Vec<PlayInfo>,
}

impl VideoStreams {
    pub fn contains(&self, job_id: &str) -> bool {
        self.streams.iter().any(|s| s.job_id == job_id)
    }
}

/// The answer to a DeleteStream call, after its retries.
pub(super) struct DeleteReply {
    pub result: Result<()>,
    /// An earlier try failed in a way that may have deleted streams nonetheless (e.g.
    /// DeleteStreamFailed, a lost connection), so a later "does not exist" is ambiguous.
    pub after_failed_try: bool,
}

/// The VOD endpoint of one provider instance.
pub(super) struct VodCore {
    // One connection pool for every call of the instance.
    http: reqwest::Client,
    endpoint: String,
    region: String,
    credentials: Credentials,
    // The path of every call: its limits keep the instance under the account's VOD quotas.
    path: CallPath,
}

impl VodCore {
    pub fn new(
        provider: &str,
        region: &str,
        endpoint_url: Option<&str>,
        credentials: Credentials,
        settings: &AliyunVodSettings,
        budgets: Option<&Arc<SharedBudgets>>,
    ) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| {
                Error::internal(format_args!("provider {provider:?}: http client: {e}"))
            })?;
        Ok(VodCore {
            http,
            endpoint: endpoint_url
                .map(str::to_string)
                .unwrap_or_else(|| format!("https://{}/", super::hosts::api_host(region))),
            region: region.to_string(),
            credentials,
            path: CallPath::new(
                provider,
                super::KIND,
                OutboundLimits::new()
                    .per_action(DELETE_STREAM, settings.delete_stream_qps)
                    .per_action(GET_PLAY_INFO, settings.get_play_info_qps)
                    .fleet_wide(provider, budgets),
            ),
        })
    }

    /// One signed try of `action` with `params`, with its own nonce and timestamp.
    async fn call_once(
        &self,
        action: &'static str,
        params: &[(&str, &str)],
    ) -> std::result::Result<serde_json::Value, VodError> {
        let timestamp = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_default();
        let nonce = uuid::Uuid::new_v4().to_string();
        let mut all: Vec<(&str, &str)> = vec![
            ("Action", action),
            ("Version", VERSION),
            ("Format", "JSON"),
            ("RegionId", &self.region),
            ("AccessKeyId", &self.credentials.access_key_id),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureVersion", "1.0"),
            ("SignatureNonce", &nonce),
            ("Timestamp", &timestamp),
        ];
        if let Some(token) = &self.credentials.security_token {
            all.push(("SecurityToken", token));
        }
        all.extend_from_slice(params);
        let to_sign = signer::string_to_sign("POST", all.iter().copied());
        let signature = signer::signature(&self.credentials.access_key_secret, &to_sign);
        let body = format!(
            "{}&Signature={}",
            signer::canonical_query(all.iter().copied()),
            signer::encode(&signature)
        );
        let mut request = self
            .http
            .post(&self.endpoint)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body);
        if let Some(left) = crate::deadline::remaining() {
            request = request.timeout(left.min(REQUEST_TIMEOUT));
        }
        let transport = |source| VodError::Transport { action, source };
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(transport)?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| VodError::Malformed {
                action,
                why: e.to_string(),
            })?;
        if value.get("Code").is_some() {
            let body: ErrorBody =
                serde_json::from_value(value).map_err(|e| VodError::Malformed {
                    action,
                    why: e.to_string(),
                })?;
            return Err(VodError::Api {
                action,
                status,
                body,
            });
        }
        Ok(value)
    }

    /// `action` on the call path (each try waits for the limit; temporary failures are tried
    /// again); `failed` is set when a try failed in a way that may still have had an effect.
    async fn call(
        &self,
        action: &'static str,
        params: &[(&str, &str)],
        failed: &AtomicBool,
    ) -> Result<serde_json::Value> {
        let provider = self.path.provider();
        self.path
            .call(action, None, || async {
                let outcome = self.call_once(action, params).await;
                outcome.map_err(|e| {
                    let error = parse_error(provider, &e);
                    let may_have_acted = match &e {
                        VodError::Transport { .. } | VodError::Malformed { .. } => true,
                        VodError::Api { body, status, .. } => {
                            *status >= 500
                                || matches!(
                                    body.code.as_str(),
                                    "DeleteStreamFailed" | "InternalError" | "ServiceUnavailable"
                                )
                        }
                    };
                    if may_have_acted {
                        failed.store(true, Ordering::SeqCst);
                    }
                    tracing::debug!(
                        provider = %provider,
                        action,
                        code = error.provider_code().unwrap_or_default(),
                        request_id = error.provider_request_id().unwrap_or_default(),
                        "vod call failed"
                    );
                    error
                })
            })
            .await
    }

    /// The streams of `video` (GetPlayInfo with every stream, not only the latest of each
    /// definition). A video without streams (InvalidVideo.NoneStream) has none.
    pub async fn streams(&self, video: &str) -> Result<VideoStreams> {
        self.play_info(video, None).await
    }

    /// The streams of `video` with PlayURLs valid for `auth_timeout_s` seconds (AuthTimeout;
    /// it counts only where URL authentication is on for the playback domain).
    pub async fn playable_streams(&self, video: &str, auth_timeout_s: u64) -> Result<VideoStreams> {
        self.play_info(video, Some(auth_timeout_s)).await
    }

    async fn play_info(&self, video: &str, auth_timeout_s: Option<u64>) -> Result<VideoStreams> {
        let timeout = auth_timeout_s.map(|s| s.to_string());
        let mut params = vec![("VideoId", video), ("ResultType", "Multiple")];
        if let Some(timeout) = &timeout {
            params.push(("AuthTimeout", timeout));
        }
        match self
            .call(GET_PLAY_INFO, &params, &AtomicBool::new(false))
            .await
        {
            Ok(value) => {
                let parsed: GetPlayInfoResponse = serde_json::from_value(value).map_err(|e| {
                    Error::new(
                        Kind::ProviderUnavailable,
                        format!("GetPlayInfo answered an unreadable stream list: {e}"),
                    )
                    .with_provider(self.path.provider())
                })?;
                Ok(VideoStreams {
                    request_id: parsed.request_id,
                    streams: parsed.play_info_list.play_info,
                })
            }
            Err(e) if e.provider_code() == Some("InvalidVideo.NoneStream") => Ok(VideoStreams {
                request_id: e.provider_request_id().map(str::to_string),
                streams: Vec::new(),
            }),
            Err(e) => Err(e),
        }
    }

    /// Deletes the streams `job_ids` (at most 20) of `video` in one DeleteStream call.
    pub async fn delete_streams(&self, video: &str, job_ids: &[&str]) -> DeleteReply {
        let failed = AtomicBool::new(false);
        let ids = job_ids.join(",");
        let params = [("VideoId", video), ("JobIds", ids.as_str())];
        let result = self.call(DELETE_STREAM, &params, &failed).await.map(|_| ());
        DeleteReply {
            result,
            after_failed_try: failed.load(Ordering::SeqCst),
        }
    }
}

/// Milliseconds since the epoch of a VOD time (`2022-04-18T07:37:15Z`), 0 when absent.
pub(super) fn time_ms(text: &str) -> i64 {
    OffsetDateTime::parse(text, &Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_play_info_as_documented() {
        let sample = r#"{"RequestId":"R-1","VideoBase":{"VideoId":"v1","Status":"Normal"},
            "PlayInfoList":{"PlayInfo":[{"JobId":"80e9c6580e754a798c3c19c59b16****",
            "Definition":"LD","Format":"m3u8","StreamType":"video","Status":"Normal",
            "CreationTime":"2022-04-18T07:37:15Z","ModificationTime":"2022-04-20T06:32:19Z",
            "Bitrate":"450.878","Width":360,"Height":640,"PlayURL":"https://example/x.m3u8"}]}}"#;
        let parsed: GetPlayInfoResponse = serde_json::from_str(sample).unwrap();
        assert_eq!(parsed.request_id.as_deref(), Some("R-1"));
        let stream = &parsed.play_info_list.play_info[0];
        assert_eq!(stream.job_id, "80e9c6580e754a798c3c19c59b16****");
        assert_eq!(stream.format, "m3u8");
        assert_eq!(stream.play_url, "https://example/x.m3u8");
        assert_eq!(time_ms(&stream.creation_time), 1_650_267_435_000);
        assert_eq!(time_ms(""), 0);
    }
}
