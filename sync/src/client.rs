//! Building the SDK client: one code path for real DynamoDB, a compatible
//! server at a URL, and the embedded server. Timeouts and retries are the
//! SDK's own (standard retry mode: jittered exponential backoff, bounded
//! attempts), never a hand-rolled loop.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_dynamodb::config::Credentials;

/// Where the table lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// The SDK's regional default, credentials from the standard AWS chain.
    Aws,
    /// A DynamoDB-compatible server at this URL, credentials from the
    /// standard AWS chain.
    Url(String),
    /// The in-process embedded server at this URL, with static dummy
    /// credentials (it checks none).
    Embedded(String),
}

/// Client settings. Every field has a production default.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Where to connect.
    pub endpoint: Endpoint,
    /// Region name (signing region for non-AWS endpoints).
    pub region: String,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Timeout for one attempt of a call.
    pub attempt_timeout: Duration,
    /// Timeout for a whole call, retries included.
    pub operation_timeout: Duration,
    /// Attempts per call, the first included.
    pub max_attempts: u32,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            endpoint: Endpoint::Aws,
            region: "us-east-1".to_owned(),
            connect_timeout: Duration::from_millis(1000),
            attempt_timeout: Duration::from_millis(2000),
            operation_timeout: Duration::from_millis(5000),
            max_attempts: 3,
        }
    }
}

impl ClientSettings {
    /// Build the SDK client. Loads the AWS credential chain unless embedded.
    pub async fn build(&self) -> aws_sdk_dynamodb::Client {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .operation_attempt_timeout(self.attempt_timeout)
            .operation_timeout(self.operation_timeout)
            .build();
        let retries = RetryConfig::standard()
            .with_max_attempts(self.max_attempts)
            .with_initial_backoff(Duration::from_millis(20))
            .with_max_backoff(Duration::from_millis(500));
        let region = Region::new(self.region.clone());
        let config = match &self.endpoint {
            Endpoint::Embedded(url) => aws_sdk_dynamodb::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(region)
                .endpoint_url(url)
                .credentials_provider(Credentials::new(
                    "edge-session",
                    "embedded",
                    None,
                    None,
                    "embedded",
                ))
                .timeout_config(timeouts)
                .retry_config(retries)
                .build(),
            Endpoint::Aws | Endpoint::Url(_) => {
                let shared = aws_config::defaults(BehaviorVersion::latest())
                    .region(region)
                    .timeout_config(timeouts)
                    .retry_config(retries)
                    .load()
                    .await;
                let mut builder = aws_sdk_dynamodb::config::Builder::from(&shared);
                if let Endpoint::Url(url) = &self.endpoint {
                    builder = builder.endpoint_url(url);
                }
                builder.build()
            }
        };
        aws_sdk_dynamodb::Client::from_conf(config)
    }
}
