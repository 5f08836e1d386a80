//! The KVS calls of one instance through `aws-sdk-kinesisvideo` and
//! `aws-sdk-kinesisvideoarchivedmedia`, each on the instance's [`CallPath`] (outbound limit
//! per try, retries inside the caller's deadline, one provider-call span), its error mapped
//! through [`parse_error`]; the outbound limits of the KVS quotas (fleet-wide on a PostgreSQL
//! store); and the neutral [`Stream`]
//! of a KVS StreamInfo.
//!
//! The archived-media calls (the HLS and DASH session URLs) go to the stream's data endpoint,
//! which GetDataEndpoint names — except with `endpoint_url` configured: an emulator serves both
//! planes there, and the hostname it returns from GetDataEndpoint is not reachable.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use aws_config::SdkConfig;
use aws_sdk_kinesisvideo::Client;
use aws_sdk_kinesisvideo::types::{
    ApiName, ComparisonOperator, Status, StreamInfo, StreamNameCondition,
    UpdateDataRetentionOperation,
};
use aws_sdk_kinesisvideoarchivedmedia as archived;
use aws_sdk_kinesisvideoarchivedmedia::primitives::DateTime;
use aws_sdk_kinesisvideoarchivedmedia::types::{
    DashFragmentSelector, DashFragmentSelectorType, DashPlaybackMode, DashTimestampRange,
    HlsFragmentSelector, HlsFragmentSelectorType, HlsPlaybackMode, HlsTimestampRange,
};

use super::config::KvsLimits;
use super::error::{Action, parse_error};
use crate::domain::{
    EndpointProtocol, PlaybackMode, Stream, StreamDetails, StreamName, StreamSpec, StreamState,
};
use crate::error::{Kind, Result};
use crate::providers::call::CallPath;
use crate::providers::limits::OutboundLimits;
use crate::store::SharedBudgets;

const CREATE: &str = "CreateStream";
const DELETE: &str = "DeleteStream";
const DESCRIBE: &str = "DescribeStream";
const LIST: &str = "ListStreams";
const LIST_TAGS: &str = "ListTagsForStream";
const TAG: &str = "TagStream";
const UNTAG: &str = "UntagStream";
const UPDATE: &str = "UpdateStream";
const UPDATE_RETENTION: &str = "UpdateDataRetention";
const DATA_ENDPOINT: &str = "GetDataEndpoint";
const DASH_SESSION_URL: &str = "GetDASHStreamingSessionURL";
const HLS_SESSION_URL: &str = "GetHLSStreamingSessionURL";

/// The SDK client of one instance, and the path its calls take.
pub(super) struct KvsCore {
    id: String,
    client: Client,
    path: CallPath,
    // The configuration archived-media clients are made from, one per data endpoint asked.
    sdk: SdkConfig,
    // Whether `endpoint_url` is configured: then the data plane is there too.
    pinned_endpoint: bool,
}

/// The limits of the KVS quotas: each action its own budgets, per account and per stream (so
/// tag reads do not hold back the changes), but the two session URLs, which share theirs.
fn limits(l: &KvsLimits) -> OutboundLimits {
    let limits = OutboundLimits::new()
        .per_action(CREATE, l.create_stream)
        .per_action(DELETE, l.delete_stream)
        .per_resource(DELETE, l.delete_stream_per_stream)
        .per_action(DESCRIBE, l.describe_stream)
        .per_resource(DESCRIBE, l.describe_stream_per_stream)
        .per_action(LIST, l.list_streams);
    [LIST_TAGS, TAG, UNTAG, UPDATE, UPDATE_RETENTION]
        .into_iter()
        .fold(limits, |limits, action| {
            limits
                .per_action(action, l.other)
                .per_resource(action, l.other_per_stream)
        })
        .per_action(DATA_ENDPOINT, l.get_data_endpoint)
        .per_resource(DATA_ENDPOINT, l.get_data_endpoint_per_stream)
        .shared_per_resource(
            &[HLS_SESSION_URL, DASH_SESSION_URL],
            l.session_url_per_stream,
        )
}

/// The neutral state of a KVS status.
pub(super) fn state(status: Option<&Status>) -> StreamState {
    match status {
        Some(Status::Creating) => StreamState::Creating,
        Some(Status::Updating) => StreamState::Updating,
        Some(Status::Deleting) => StreamState::Deleting,
        _ => StreamState::Active,
    }
}

impl KvsCore {
    /// The client of instance `id`, its limits fleet-wide in `budgets` when given.
    pub fn new(
        id: &str,
        sdk: &SdkConfig,
        pinned_endpoint: bool,
        limits_config: &KvsLimits,
        budgets: Option<&Arc<SharedBudgets>>,
    ) -> Self {
        KvsCore {
            id: id.to_string(),
            client: Client::new(sdk),
            path: CallPath::new(
                id,
                super::KIND,
                limits(limits_config).fleet_wide(id, budgets),
            ),
            sdk: sdk.clone(),
            pinned_endpoint,
        }
    }

    /// The neutral stream of a KVS StreamInfo (and its tags, when read).
    pub fn stream(&self, info: &StreamInfo, tags: BTreeMap<String, String>) -> Stream {
        let name = StreamName {
            provider: self.id.clone(),
            video: None,
            stream: info.stream_name().unwrap_or_default().to_string(),
        };
        let created = info
            .creation_time()
            .and_then(|t| t.to_millis().ok())
            .unwrap_or_default();
        Stream {
            name,
            etag: info.version().unwrap_or_default().to_string(),
            state: state(info.status()),
            spec: StreamSpec {
                media_type: info.media_type().unwrap_or_default().to_string(),
                data_retention_hours: info.data_retention_in_hours().unwrap_or_default(),
                device_name: info.device_name().unwrap_or_default().to_string(),
                kms_key_id: info.kms_key_id().unwrap_or_default().to_string(),
                tags,
                details: None,
            },
            create_time_ms: created,
            update_time_ms: created,
            provider_uid: info.stream_arn().unwrap_or_default().to_string(),
            details: StreamDetails::None,
        }
    }

    /// DescribeStream; `None` when the stream does not exist.
    pub async fn describe(&self, name: &str) -> Result<Option<StreamInfo>> {
        match self.described(name).await {
            Ok(info) => Ok(info),
            Err(e) if e.kind() == Kind::StreamNotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// DescribeStream; a missing stream is KVS's NOT_FOUND, with its code and request id.
    pub async fn described(&self, name: &str) -> Result<Option<StreamInfo>> {
        let described = self
            .path
            .call(DESCRIBE, Some(name), || async {
                self.client
                    .describe_stream()
                    .stream_name(name)
                    .send()
                    .await
                    .map_err(|e| parse_error(&self.id, Action::Other, e))
            })
            .await?;
        Ok(described.stream_info)
    }

    /// ListTagsForStream.
    pub async fn tags(&self, name: &str) -> Result<BTreeMap<String, String>> {
        let mut tags = BTreeMap::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .path
                .call(LIST_TAGS, Some(name), || async {
                    self.client
                        .list_tags_for_stream()
                        .stream_name(name)
                        .set_next_token(token.clone())
                        .send()
                        .await
                        .map_err(|e| parse_error(&self.id, Action::Other, e))
                })
                .await?;
            tags.extend(page.tags.unwrap_or_default());
            match page.next_token {
                Some(next) if !next.is_empty() => token = Some(next),
                _ => return Ok(tags),
            }
        }
    }

    /// CreateStream; returns the ARN.
    pub async fn create(&self, name: &str, spec: &StreamSpec) -> Result<String> {
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let tags: HashMap<String, String> = spec.tags.clone().into_iter().collect();
        let output = self
            .path
            .call(CREATE, None, || async {
                self.client
                    .create_stream()
                    .stream_name(name)
                    .set_device_name(non_empty(&spec.device_name))
                    .set_media_type(non_empty(&spec.media_type))
                    .set_kms_key_id(non_empty(&spec.kms_key_id))
                    .data_retention_in_hours(spec.data_retention_hours)
                    .set_tags((!tags.is_empty()).then(|| tags.clone()))
                    .send()
                    .await
                    .map_err(|e| parse_error(&self.id, Action::Create, e))
            })
            .await?;
        Ok(output.stream_arn.unwrap_or_default())
    }

    /// ListStreams, one page.
    pub async fn list(
        &self,
        prefix: Option<&str>,
        token: Option<String>,
        max: usize,
    ) -> Result<(Vec<StreamInfo>, Option<String>)> {
        let condition = prefix.map(|p| {
            StreamNameCondition::builder()
                .comparison_operator(ComparisonOperator::BeginsWith)
                .comparison_value(p)
                .build()
        });
        let output = self
            .path
            .call(LIST, None, || async {
                self.client
                    .list_streams()
                    .max_results(max as i32)
                    .set_next_token(token.clone())
                    .set_stream_name_condition(condition.clone())
                    .send()
                    .await
                    .map_err(|e| parse_error(&self.id, Action::Other, e))
            })
            .await?;
        let next = output.next_token.filter(|t| !t.is_empty());
        Ok((output.stream_info_list.unwrap_or_default(), next))
    }

    /// DeleteStream, with the caller's etag as CurrentVersion when given.
    pub async fn delete(&self, name: &str, arn: &str, version: Option<&str>) -> Result<()> {
        self.path
            .call(DELETE, Some(name), || async {
                self.client
                    .delete_stream()
                    .stream_arn(arn)
                    .set_current_version(version.map(str::to_string))
                    .send()
                    .await
                    .map_err(|e| parse_error(&self.id, Action::Delete, e))
            })
            .await
            .map(|_| ())
    }

    /// UpdateStream (device name, media type) at `version`.
    pub async fn update(
        &self,
        name: &str,
        version: &str,
        device_name: Option<&str>,
        media_type: Option<&str>,
    ) -> Result<()> {
        self.path
            .call(UPDATE, Some(name), || async {
                self.client
                    .update_stream()
                    .stream_name(name)
                    .current_version(version)
                    .set_device_name(device_name.map(str::to_string))
                    .set_media_type(media_type.map(str::to_string))
                    .send()
                    .await
                    .map_err(|e| parse_error(&self.id, Action::Other, e))
            })
            .await
            .map(|_| ())
    }

    /// UpdateDataRetention from `from` to `to` hours at `version`.
    pub async fn update_retention(
        &self,
        name: &str,
        version: &str,
        from: i32,
        to: i32,
    ) -> Result<()> {
        let operation = if to > from {
            UpdateDataRetentionOperation::IncreaseDataRetention
        } else {
            UpdateDataRetentionOperation::DecreaseDataRetention
        };
        self.path
            .call(UPDATE_RETENTION, Some(name), || async {
                self.client
                    .update_data_retention()
                    .stream_name(name)
                    .current_version(version)
                    .operation(operation.clone())
                    .data_retention_change_in_hours((to - from).abs())
                    .send()
                    .await
                    .map_err(|e| parse_error(&self.id, Action::Other, e))
            })
            .await
            .map(|_| ())
    }

    /// Makes the stream's tags exactly `wanted` (TagStream, UntagStream).
    pub async fn set_tags(&self, name: &str, wanted: &BTreeMap<String, String>) -> Result<()> {
        let current = self.tags(name).await?;
        let stale: Vec<String> = current
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        let changed: HashMap<String, String> = wanted
            .iter()
            .filter(|(k, v)| current.get(*k) != Some(v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !stale.is_empty() {
            self.path
                .call(UNTAG, Some(name), || async {
                    self.client
                        .untag_stream()
                        .stream_name(name)
                        .set_tag_key_list(Some(stale.clone()))
                        .send()
                        .await
                        .map_err(|e| parse_error(&self.id, Action::Other, e))
                })
                .await?;
        }
        if !changed.is_empty() {
            self.path
                .call(TAG, Some(name), || async {
                    self.client
                        .tag_stream()
                        .stream_name(name)
                        .set_tags(Some(changed.clone()))
                        .send()
                        .await
                        .map_err(|e| parse_error(&self.id, Action::Other, e))
                })
                .await?;
        }
        Ok(())
    }

    /// GetDataEndpoint for `api`: where the stream's data-plane calls of that API go.
    pub async fn data_endpoint(&self, name: &str, api: ApiName) -> Result<String> {
        let output = self
            .path
            .call(DATA_ENDPOINT, Some(name), || async {
                self.client
                    .get_data_endpoint()
                    .stream_name(name)
                    .api_name(api.clone())
                    .send()
                    .await
                    .map_err(|e| parse_error(&self.id, Action::Other, e))
            })
            .await?;
        Ok(output.data_endpoint.unwrap_or_default())
    }

    /// The endpoint_url, when configured: an emulator's data plane.
    pub fn pinned_endpoint(&self) -> Option<&str> {
        self.pinned_endpoint
            .then(|| self.sdk.endpoint_url())
            .flatten()
    }

    /// An archived-media client for `data_endpoint`, or for the configured endpoint_url.
    fn archived(&self, data_endpoint: &str) -> archived::Client {
        let mut config = archived::config::Builder::from(&self.sdk);
        if !self.pinned_endpoint {
            config = config.endpoint_url(data_endpoint);
        }
        archived::Client::from_conf(config.build())
    }

    /// A playback session URL over HLS or DASH (GetDataEndpoint, then the session call),
    /// valid for `expires_s` seconds.
    pub async fn session_url(
        &self,
        name: &str,
        protocol: EndpointProtocol,
        mode: PlaybackMode,
        expires_s: i32,
    ) -> Result<String> {
        let (start, end) = match mode {
            PlaybackMode::Live => (None, None),
            PlaybackMode::LiveReplay { start_ms } => (Some(start_ms), None),
            PlaybackMode::OnDemand { start_ms, end_ms } => (Some(start_ms), Some(end_ms)),
        };
        let start = start.map(DateTime::from_millis);
        let end = end.map(DateTime::from_millis);
        let dash = protocol == EndpointProtocol::Dash;
        let api = if dash {
            ApiName::GetDashStreamingSessionUrl
        } else {
            ApiName::GetHlsStreamingSessionUrl
        };
        let client = self.archived(&self.data_endpoint(name, api).await?);
        if dash {
            let playback = match mode {
                PlaybackMode::Live => DashPlaybackMode::Live,
                PlaybackMode::LiveReplay { .. } => DashPlaybackMode::LiveReplay,
                PlaybackMode::OnDemand { .. } => DashPlaybackMode::OnDemand,
            };
            let selector = start.map(|_| {
                DashFragmentSelector::builder()
                    .fragment_selector_type(DashFragmentSelectorType::ServerTimestamp)
                    .timestamp_range(
                        DashTimestampRange::builder()
                            .set_start_timestamp(start)
                            .set_end_timestamp(end)
                            .build(),
                    )
                    .build()
            });
            let output = self
                .path
                .call(DASH_SESSION_URL, Some(name), || async {
                    client
                        .get_dash_streaming_session_url()
                        .stream_name(name)
                        .playback_mode(playback.clone())
                        .set_dash_fragment_selector(selector.clone())
                        .expires(expires_s)
                        .send()
                        .await
                        .map_err(|e| parse_error(&self.id, Action::Other, e))
                })
                .await?;
            return Ok(output.dash_streaming_session_url.unwrap_or_default());
        }
        let playback = match mode {
            PlaybackMode::Live => HlsPlaybackMode::Live,
            PlaybackMode::LiveReplay { .. } => HlsPlaybackMode::LiveReplay,
            PlaybackMode::OnDemand { .. } => HlsPlaybackMode::OnDemand,
        };
        let selector = start.map(|_| {
            HlsFragmentSelector::builder()
                .fragment_selector_type(HlsFragmentSelectorType::ServerTimestamp)
                .timestamp_range(
                    HlsTimestampRange::builder()
                        .set_start_timestamp(start)
                        .set_end_timestamp(end)
                        .build(),
                )
                .build()
        });
        let output = self
            .path
            .call(HLS_SESSION_URL, Some(name), || async {
                client
                    .get_hls_streaming_session_url()
                    .stream_name(name)
                    .playback_mode(playback.clone())
                    .set_hls_fragment_selector(selector.clone())
                    .expires(expires_s)
                    .send()
                    .await
                    .map_err(|e| parse_error(&self.id, Action::Other, e))
            })
            .await?;
        Ok(output.hls_streaming_session_url.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;

    #[tokio::test]
    async fn each_tag_and_update_action_has_its_own_budget_per_stream() {
        let limits = limits(&KvsLimits::default());
        for action in [LIST_TAGS, TAG, UNTAG, UPDATE, UPDATE_RETENTION] {
            let started = Instant::now();
            limits.acquire(action, Some("a")).await.unwrap();
            limits.acquire(action, Some("b")).await.unwrap();
            assert!(started.elapsed() < Duration::from_millis(100), "{action}");
            // A second call of the action on one stream waits for that stream's 5/s.
            limits.acquire(action, Some("a")).await.unwrap();
            assert!(
                started.elapsed() >= Duration::from_millis(190),
                "{action}: {:?}",
                started.elapsed()
            );
        }
    }
}
