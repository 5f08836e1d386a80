//! What the AWS kinds (`kinesis-video`, `cloudfront`, `cloudfront-streaming`) share: the SDK
//! configuration of one provider instance.
//!
//! Region and `endpoint_url` come from the instance; credentials from the default chain, except
//! that `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN` in the gateway's
//! [`Environment`] are used directly (the same variables the chain would read first, taken
//! from the map so tests never touch the process environment). The SDK's own retries are off:
//! `providers::retry` retries, because only the adapters know which provider codes are
//! temporary (KVS `ClientLimitExceededException` is not in the SDK's list).

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;

use crate::config::{Environment, ProviderConfig};

/// The bound on one SDK call, retries excluded.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The SDK configuration of one AWS provider instance.
pub async fn sdk_config(config: &ProviderConfig, environment: &Environment) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(CALL_TIMEOUT)
                .connect_timeout(Duration::from_secs(5))
                .build(),
        );
    if let Some(region) = &config.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &config.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    if let (Some(id), Some(secret)) = (
        environment.get("AWS_ACCESS_KEY_ID"),
        environment.get("AWS_SECRET_ACCESS_KEY"),
    ) {
        loader = loader.credentials_provider(Credentials::new(
            id,
            secret,
            environment.get("AWS_SESSION_TOKEN").map(str::to_string),
            None,
            "streamgate-environment",
        ));
    }
    loader.load().await
}
