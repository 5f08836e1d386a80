//! The SDK calls of both CloudFront kinds behind one interface: streaming distributions
//! (`/2020-05-31/streaming-distribution`) and web distributions (`/2020-05-31/distribution`)
//! read, list, change and delete the same way, so the backend and the workflow never see
//! which API is underneath.
//!
//! Every call takes the instance's [`CallPath`]: it waits for the outbound limit of its class
//! (reads or changes, [`CloudFrontLimits`]) on each try, is retried on temporary failures
//! (throttling, 5xx, timeouts) within the caller's deadline, and is one provider-call span;
//! its failure leaves as a taxonomy error through `parse_error`. Also here: the configuration
//! of a new web distribution and the checks of new details.

use std::future::Future;
use std::sync::Arc;

use aws_sdk_cloudfront::Client;
use aws_sdk_cloudfront::config::Region;
use aws_sdk_cloudfront::types::{
    CustomOriginConfig, DefaultCacheBehavior, DistributionConfig, Origin, OriginProtocolPolicy,
    Origins, S3OriginConfig, StreamingDistributionConfig, ViewerProtocolPolicy,
};

use super::Variant;
use super::config::CloudFrontLimits;
use super::error::{CloudFrontError, from_sdk, parse_error};
use crate::config::{Environment, ProviderConfig};
use crate::domain::{CloudFrontDetails, CloudFrontOrigin};
use crate::error::{Error, Kind, Result};
use crate::providers::call::CallPath;
use crate::providers::limits::OutboundLimits;
use crate::store::SharedBudgets;

/// CloudFront is global; its API is signed for us-east-1 whatever the instance says.
const GLOBAL_REGION: &str = "us-east-1";
/// The id of the single origin of a distribution streamgate creates.
const ORIGIN_ID: &str = "streamgate-origin";
/// AWS's managed cache policy `CachingOptimized`, the default for media delivery.
const CACHING_OPTIMIZED: &str = "658327ea-f89d-4fab-a63d-7e88639e58f6";

/// Each action by the API of the instance's variant: `[web, streaming]`.
type Action = [&'static str; 2];
const GET: Action = ["GetDistribution", "GetStreamingDistribution"];
const GET_CONFIG: Action = ["GetDistributionConfig", "GetStreamingDistributionConfig"];
const LIST: Action = ["ListDistributions", "ListStreamingDistributions"];
const CREATE: Action = ["CreateDistribution", "CreateStreamingDistribution"];
const UPDATE: Action = ["UpdateDistribution", "UpdateStreamingDistribution"];
const DELETE: Action = ["DeleteDistribution", "DeleteStreamingDistribution"];

/// The limits of one instance: the reads share one budget, the changes another.
fn limits(l: &CloudFrontLimits) -> OutboundLimits {
    OutboundLimits::new()
        .shared(&[GET, GET_CONFIG, LIST].concat(), l.reads)
        .shared(&[CREATE, UPDATE, DELETE].concat(), l.changes)
}

/// A distribution as either API reports it.
#[derive(Clone, Debug)]
pub(super) struct Distribution {
    pub id: String,
    pub arn: String,
    /// Empty in list results of streaming distributions, which carry no ETag.
    pub etag: String,
    pub status: String,
    pub last_modified_ms: i64,
    pub details: CloudFrontDetails,
}

impl Distribution {
    pub fn deployed(&self) -> bool {
        self.status == "Deployed"
    }
}

/// A distribution's configuration, as read for a change.
#[derive(Clone, Debug)]
pub(super) enum Config {
    Streaming(Box<StreamingDistributionConfig>),
    Web(Box<DistributionConfig>),
}

impl Config {
    pub fn enabled(&self) -> bool {
        match self {
            Config::Streaming(c) => c.enabled,
            Config::Web(c) => c.enabled,
        }
    }

    pub fn comment(&self) -> &str {
        match self {
            Config::Streaming(c) => &c.comment,
            Config::Web(c) => &c.comment,
        }
    }

    pub fn set_enabled(&mut self, enabled: bool) {
        match self {
            Config::Streaming(c) => c.enabled = enabled,
            Config::Web(c) => c.enabled = enabled,
        }
    }

    pub fn set_comment(&mut self, comment: &str) {
        match self {
            Config::Streaming(c) => c.comment = comment.to_string(),
            Config::Web(c) => c.comment = comment.to_string(),
        }
    }
}

/// A configuration and the ETag it was read with.
#[derive(Clone, Debug)]
pub(super) struct Versioned {
    pub etag: String,
    pub config: Config,
}

fn millis(time: Option<&aws_sdk_cloudfront::primitives::DateTime>) -> i64 {
    time.and_then(|t| t.to_millis().ok()).unwrap_or_default()
}

fn s3_origin(origin: Option<&aws_sdk_cloudfront::types::S3Origin>) -> Option<CloudFrontOrigin> {
    origin.map(|o| CloudFrontOrigin {
        s3: true,
        domain_name: o.domain_name.clone(),
        origin_access_identity: o.origin_access_identity.clone(),
        ..CloudFrontOrigin::default()
    })
}

fn web_origin(origins: Option<&Origins>) -> Option<CloudFrontOrigin> {
    let origin = origins?.items.first()?;
    Some(CloudFrontOrigin {
        s3: origin.s3_origin_config.is_some(),
        domain_name: origin.domain_name.clone(),
        origin_path: origin.origin_path.clone().unwrap_or_default(),
        origin_access_identity: origin
            .s3_origin_config
            .as_ref()
            .map(|c| c.origin_access_identity.clone())
            .unwrap_or_default(),
        origin_protocol_policy: origin
            .custom_origin_config
            .as_ref()
            .map(|c| c.origin_protocol_policy.as_str().to_string())
            .unwrap_or_default(),
    })
}

fn streaming(
    d: &aws_sdk_cloudfront::types::StreamingDistribution,
    etag: Option<&str>,
) -> Distribution {
    let config = d.streaming_distribution_config.as_ref();
    Distribution {
        id: d.id.clone(),
        arn: d.arn.clone(),
        etag: etag.unwrap_or_default().to_string(),
        status: d.status.clone(),
        last_modified_ms: millis(d.last_modified_time.as_ref()),
        details: CloudFrontDetails {
            domain_name: d.domain_name.clone(),
            enabled: config.is_some_and(|c| c.enabled),
            comment: config.map(|c| c.comment.clone()).unwrap_or_default(),
            status: d.status.clone(),
            origin: s3_origin(config.and_then(|c| c.s3_origin.as_ref())),
        },
    }
}

fn web(d: &aws_sdk_cloudfront::types::Distribution, etag: Option<&str>) -> Distribution {
    let config = d.distribution_config.as_ref();
    Distribution {
        id: d.id.clone(),
        arn: d.arn.clone(),
        etag: etag.unwrap_or_default().to_string(),
        status: d.status.clone(),
        last_modified_ms: millis(Some(&d.last_modified_time)),
        details: CloudFrontDetails {
            domain_name: d.domain_name.clone(),
            enabled: config.is_some_and(|c| c.enabled),
            comment: config.map(|c| c.comment.clone()).unwrap_or_default(),
            status: d.status.clone(),
            origin: web_origin(config.and_then(|c| c.origins.as_ref())),
        },
    }
}

fn missing(what: &str) -> CloudFrontError {
    CloudFrontError::Unreadable(format!("the answer has no {what}"))
}

/// The CloudFront API of one provider instance.
pub(super) struct CloudFrontCore {
    client: Client,
    variant: Variant,
    path: CallPath,
}

impl CloudFrontCore {
    /// A client on the instance's endpoint and credentials (see `providers::aws`), its calls
    /// within `limits_config`.
    pub async fn new(
        config: &ProviderConfig,
        environment: &Environment,
        variant: Variant,
        limits_config: &CloudFrontLimits,
        budgets: Option<&Arc<SharedBudgets>>,
    ) -> Self {
        let sdk = crate::providers::aws::sdk_config(config, environment).await;
        let mut builder = aws_sdk_cloudfront::config::Builder::from(&sdk);
        if sdk.region().is_none() {
            builder = builder.region(Region::new(GLOBAL_REGION));
        }
        CloudFrontCore {
            client: Client::from_conf(builder.build()),
            variant,
            path: CallPath::new(
                &config.id,
                variant.kind(),
                limits(limits_config).fleet_wide(&config.id, budgets),
            ),
        }
    }

    /// Runs one SDK call on the call path, mapping its failure into the taxonomy; one
    /// provider call named `web` or `streaming` by the instance's variant.
    async fn call<T, F, Fut>(&self, [web, streaming]: Action, send: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = std::result::Result<T, CloudFrontError>>,
    {
        let action = match self.variant {
            Variant::Web => web,
            Variant::Streaming => streaming,
        };
        let provider = self.path.provider();
        self.path
            .call(action, None, || async {
                send().await.map_err(|e| parse_error(provider, e))
            })
            .await
    }

    /// Reads a distribution with its status and ETag.
    pub async fn get(&self, id: &str) -> Result<Distribution> {
        self.call(GET, || async {
            match self.variant {
                Variant::Streaming => {
                    let out = self
                        .client
                        .get_streaming_distribution()
                        .id(id)
                        .send()
                        .await
                        .map_err(from_sdk)?;
                    let d = out
                        .streaming_distribution()
                        .ok_or_else(|| missing("StreamingDistribution"))?;
                    Ok(streaming(d, out.e_tag()))
                }
                Variant::Web => {
                    let out = self
                        .client
                        .get_distribution()
                        .id(id)
                        .send()
                        .await
                        .map_err(from_sdk)?;
                    let d = out.distribution().ok_or_else(|| missing("Distribution"))?;
                    Ok(web(d, out.e_tag()))
                }
            }
        })
        .await
    }

    /// Reads a distribution's configuration and its ETag.
    pub async fn config(&self, id: &str) -> Result<Versioned> {
        self.call(GET_CONFIG, || async {
            let (etag, config) = match self.variant {
                Variant::Streaming => {
                    let out = self
                        .client
                        .get_streaming_distribution_config()
                        .id(id)
                        .send()
                        .await
                        .map_err(from_sdk)?;
                    let config = out
                        .streaming_distribution_config
                        .ok_or_else(|| missing("StreamingDistributionConfig"))?;
                    (out.e_tag, Config::Streaming(Box::new(config)))
                }
                Variant::Web => {
                    let out = self
                        .client
                        .get_distribution_config()
                        .id(id)
                        .send()
                        .await
                        .map_err(from_sdk)?;
                    let config = out
                        .distribution_config
                        .ok_or_else(|| missing("DistributionConfig"))?;
                    (out.e_tag, Config::Web(Box::new(config)))
                }
            };
            Ok(Versioned {
                etag: etag.ok_or_else(|| missing("ETag"))?,
                config,
            })
        })
        .await
    }

    /// Replaces a distribution's configuration if its ETag is still `if_match`. Returns the
    /// distribution with its new ETag.
    pub async fn put_config(
        &self,
        id: &str,
        config: &Config,
        if_match: &str,
    ) -> Result<Distribution> {
        self.call(UPDATE, || async {
            match config {
                Config::Streaming(c) => {
                    let out = self
                        .client
                        .update_streaming_distribution()
                        .id(id)
                        .if_match(if_match)
                        .streaming_distribution_config(c.as_ref().clone())
                        .send()
                        .await
                        .map_err(from_sdk)?;
                    let d = out
                        .streaming_distribution()
                        .ok_or_else(|| missing("StreamingDistribution"))?;
                    Ok(streaming(d, out.e_tag()))
                }
                Config::Web(c) => {
                    let out = self
                        .client
                        .update_distribution()
                        .id(id)
                        .if_match(if_match)
                        .distribution_config(c.as_ref().clone())
                        .send()
                        .await
                        .map_err(from_sdk)?;
                    let d = out.distribution().ok_or_else(|| missing("Distribution"))?;
                    Ok(web(d, out.e_tag()))
                }
            }
        })
        .await
    }

    /// Deletes a disabled, deployed distribution if its ETag is still `if_match`.
    pub async fn delete(&self, id: &str, if_match: &str) -> Result<()> {
        self.call(DELETE, || async {
            match self.variant {
                Variant::Streaming => self
                    .client
                    .delete_streaming_distribution()
                    .id(id)
                    .if_match(if_match)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(from_sdk),
                Variant::Web => self
                    .client
                    .delete_distribution()
                    .id(id)
                    .if_match(if_match)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(from_sdk),
            }
        })
        .await
    }

    /// One page of distributions after `marker`, and the marker of the next page.
    pub async fn list(
        &self,
        marker: Option<&str>,
        max_items: usize,
    ) -> Result<(Vec<Distribution>, Option<String>)> {
        let max_items = i32::try_from(max_items).unwrap_or(i32::MAX);
        self.call(LIST, || async {
            match self.variant {
                Variant::Streaming => {
                    let out = self
                        .client
                        .list_streaming_distributions()
                        .set_marker(marker.map(str::to_string))
                        .max_items(max_items)
                        .send()
                        .await
                        .map_err(from_sdk)?;
                    let Some(list) = out.streaming_distribution_list() else {
                        return Ok((Vec::new(), None));
                    };
                    let items = list
                        .items()
                        .iter()
                        .map(|s| Distribution {
                            id: s.id.clone(),
                            arn: s.arn.clone(),
                            etag: String::new(),
                            status: s.status.clone(),
                            last_modified_ms: millis(Some(&s.last_modified_time)),
                            details: CloudFrontDetails {
                                domain_name: s.domain_name.clone(),
                                enabled: s.enabled,
                                comment: s.comment.clone(),
                                status: s.status.clone(),
                                origin: s3_origin(s.s3_origin.as_ref()),
                            },
                        })
                        .collect();
                    let next = list
                        .is_truncated
                        .then(|| list.next_marker.clone())
                        .flatten();
                    Ok((items, next))
                }
                Variant::Web => {
                    let out = self
                        .client
                        .list_distributions()
                        .set_marker(marker.map(str::to_string))
                        .max_items(max_items)
                        .send()
                        .await
                        .map_err(from_sdk)?;
                    let Some(list) = out.distribution_list() else {
                        return Ok((Vec::new(), None));
                    };
                    let items = list
                        .items()
                        .iter()
                        .map(|s| Distribution {
                            id: s.id.clone(),
                            arn: s.arn.clone(),
                            etag: s.e_tag.clone().unwrap_or_default(),
                            status: s.status.clone(),
                            last_modified_ms: millis(Some(&s.last_modified_time)),
                            details: CloudFrontDetails {
                                domain_name: s.domain_name.clone(),
                                enabled: s.enabled,
                                comment: s.comment.clone(),
                                status: s.status.clone(),
                                origin: web_origin(s.origins.as_ref()),
                            },
                        })
                        .collect();
                    let next = list
                        .is_truncated
                        .then(|| list.next_marker.clone())
                        .flatten();
                    Ok((items, next))
                }
            }
        })
        .await
    }

    /// Creates an enabled web distribution with one origin. CloudFront answers a repeated
    /// `caller_reference` with DistributionAlreadyExists: then the distribution made by the
    /// earlier attempt is looked up and returned, so a retry never makes a second one.
    pub async fn create(
        &self,
        caller_reference: &str,
        details: &CloudFrontDetails,
    ) -> Result<Distribution> {
        let config = web_config(caller_reference, details)
            .map_err(|e| parse_error(self.path.provider(), e))?;
        let created = self
            .call(CREATE, || async {
                let out = self
                    .client
                    .create_distribution()
                    .distribution_config(config.clone())
                    .send()
                    .await
                    .map_err(from_sdk)?;
                let d = out.distribution().ok_or_else(|| missing("Distribution"))?;
                Ok(web(d, out.e_tag()))
            })
            .await;
        match created {
            Err(e) if e.kind() == Kind::StreamAlreadyExists => {
                match self.find_created(caller_reference, details).await? {
                    Some(existing) => Ok(existing),
                    None => Err(e),
                }
            }
            other => other,
        }
    }

    /// The distribution whose CallerReference is `reference`, among those with the origin of
    /// `details` (the list does not show caller references; configurations do).
    async fn find_created(
        &self,
        reference: &str,
        details: &CloudFrontDetails,
    ) -> Result<Option<Distribution>> {
        let domain = details.origin.as_ref().map(|o| o.domain_name.as_str());
        let mut marker: Option<String> = None;
        loop {
            let (page, next) = self.list(marker.as_deref(), 100).await?;
            for candidate in page {
                if candidate
                    .details
                    .origin
                    .as_ref()
                    .map(|o| o.domain_name.as_str())
                    != domain
                {
                    continue;
                }
                let versioned = self.config(&candidate.id).await?;
                if let Config::Web(config) = &versioned.config
                    && config.caller_reference == reference
                {
                    return self.get(&candidate.id).await.map(Some);
                }
            }
            match next {
                Some(next) => marker = Some(next),
                None => return Ok(None),
            }
        }
    }
}

/// The configuration of a new web distribution: one origin, HTTPS for viewers, the managed
/// CachingOptimized policy, enabled.
fn web_config(
    caller_reference: &str,
    details: &CloudFrontDetails,
) -> std::result::Result<DistributionConfig, CloudFrontError> {
    let built = |e: aws_sdk_cloudfront::error::BuildError| CloudFrontError::Request(e.to_string());
    let wanted = details
        .origin
        .as_ref()
        .ok_or_else(|| CloudFrontError::Request("no origin".to_string()))?;
    let mut origin = Origin::builder()
        .id(ORIGIN_ID)
        .domain_name(&wanted.domain_name)
        .origin_path(&wanted.origin_path);
    origin = if wanted.s3 {
        origin.s3_origin_config(
            S3OriginConfig::builder()
                .origin_access_identity(&wanted.origin_access_identity)
                .build(),
        )
    } else {
        let policy = match wanted.origin_protocol_policy.as_str() {
            "" => "https-only",
            given => given,
        };
        origin.custom_origin_config(
            CustomOriginConfig::builder()
                .http_port(80)
                .https_port(443)
                .origin_protocol_policy(OriginProtocolPolicy::from(policy))
                .build()
                .map_err(built)?,
        )
    };
    DistributionConfig::builder()
        .caller_reference(caller_reference)
        .origins(
            Origins::builder()
                .quantity(1)
                .items(origin.build().map_err(built)?)
                .build()
                .map_err(built)?,
        )
        .default_cache_behavior(
            DefaultCacheBehavior::builder()
                .target_origin_id(ORIGIN_ID)
                .viewer_protocol_policy(ViewerProtocolPolicy::RedirectToHttps)
                .cache_policy_id(CACHING_OPTIMIZED)
                .build()
                .map_err(built)?,
        )
        .comment(&details.comment)
        .enabled(true)
        .build()
        .map_err(built)
}

/// Refuses what CloudFront would refuse in a new distribution's details, as field violations.
pub(super) fn check_new(details: &CloudFrontDetails) -> Result<()> {
    let field = "stream.cloudfront.origin";
    let Some(origin) = &details.origin else {
        return Err(Error::invalid_field(
            field,
            "required: an S3 bucket or a custom origin",
        ));
    };
    let mut violations = crate::domain::validate::Violations::default();
    if origin.domain_name.is_empty() || origin.domain_name.len() > 253 {
        violations.add(
            format!("{field}.domain_name"),
            "required, at most 253 characters",
        );
    }
    if !origin.origin_path.is_empty()
        && (!origin.origin_path.starts_with('/') || origin.origin_path.ends_with('/'))
    {
        violations.add(
            format!("{field}.origin_path"),
            "must start with / and not end with /, e.g. /live",
        );
    }
    if !origin.s3 && !origin.origin_access_identity.is_empty() {
        violations.add(
            format!("{field}.origin_access_identity"),
            "only an S3 origin takes an origin access identity",
        );
    }
    if !matches!(
        origin.origin_protocol_policy.as_str(),
        "" | "http-only" | "match-viewer" | "https-only"
    ) || (origin.s3 && !origin.origin_protocol_policy.is_empty())
    {
        violations.add(
            format!("{field}.origin_protocol_policy"),
            "custom origins only: http-only, match-viewer or https-only",
        );
    }
    check_comment(
        &details.comment,
        "stream.cloudfront.comment",
        &mut violations,
    );
    violations.finish()
}

/// CloudFront's limit on comments.
pub(super) fn check_comment(
    comment: &str,
    field: &str,
    violations: &mut crate::domain::validate::Violations,
) {
    if comment.chars().count() > 128 {
        violations.add(field, "at most 128 characters");
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::time::{Duration, Instant};

    use super::*;

    /// A core whose calls never reach the client: only the path they take is exercised.
    async fn core(variant: Variant, reads: u32, changes: u32) -> CloudFrontCore {
        let config = crate::config::Config::from_toml(
            "[[providers]]\nid = \"cf\"\nkind = \"cloudfront\"\nregion = \"us-east-1\"\n\
             endpoint_url = \"http://127.0.0.1:9\"\n",
        )
        .unwrap()
        .providers
        .remove(0);
        let limits = CloudFrontLimits {
            reads: NonZeroU32::new(reads).unwrap(),
            changes: NonZeroU32::new(changes).unwrap(),
        };
        CloudFrontCore::new(&config, &Environment::default(), variant, &limits, None).await
    }

    async fn calls(core: &CloudFrontCore, actions: &[Action]) {
        for action in actions {
            core.call(*action, || async { Ok(()) }).await.unwrap();
        }
    }

    #[tokio::test]
    async fn reads_share_one_limit_of_the_instance() {
        let core = core(Variant::Web, 20, 1000).await;
        let started = Instant::now();
        calls(&core, &[GET, GET_CONFIG, LIST, GET, GET_CONFIG]).await;
        // Five reads at 20/s together: the first at once, then one every 50 ms.
        assert!(
            started.elapsed() >= Duration::from_millis(195),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn changes_have_their_own_limit_in_both_apis() {
        for variant in [Variant::Web, Variant::Streaming] {
            let core = core(variant, 1000, 20).await;
            let started = Instant::now();
            calls(&core, &[CREATE, UPDATE, DELETE]).await;
            assert!(
                started.elapsed() >= Duration::from_millis(95),
                "{variant:?}: {:?}",
                started.elapsed()
            );
            // The reads' budget is untouched by the changes.
            let reads = Instant::now();
            calls(&core, &[GET, LIST]).await;
            assert!(reads.elapsed() < Duration::from_millis(40), "{variant:?}");
        }
    }
}
