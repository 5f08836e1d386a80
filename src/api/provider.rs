//! ProviderService: the configured instances, their kinds and capabilities.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{Gateway, authorize_provider, convert, principal};
use crate::domain::ProviderName;
use crate::domain::page::page_size;
use crate::identity::Grants;
use crate::pb;
use crate::pb::provider_service_server::ProviderService;
use crate::providers::Provider;

/// The ProviderService implementation.
pub struct ProviderApi {
    gateway: Arc<Gateway>,
}

impl ProviderApi {
    /// Serves ProviderService from the shared gateway state.
    pub fn new(gateway: Arc<Gateway>) -> Self {
        ProviderApi { gateway }
    }
}

fn provider(p: &dyn Provider) -> pb::Provider {
    let cap = p.capability();
    pb::Provider {
        name: format!("providers/{}", p.id()),
        kind: p.kind().to_string(),
        region: p.region().unwrap_or_default().to_string(),
        capabilities: Some(pb::Capabilities {
            methods: cap
                .supported_methods()
                .map(|m| m.as_str().to_string())
                .collect(),
            etags: cap.etags,
            max_batch_size: cap.max_batch_size as i32,
            list_filters: cap.list_filters.iter().map(|f| f.to_string()).collect(),
            stream_parent_pattern: cap.stream_parent_pattern.to_string(),
            limits: Some(pb::StreamLimits {
                stream_id_pattern: cap.stream_id_pattern.regex(),
                max_stream_id_length: cap.stream_id_pattern.max_len() as i32,
                max_data_retention_hours: cap.max_data_retention_hours,
                max_tags: cap.max_tags as i32,
                max_page_size: cap.max_page_size as i32,
            }),
            endpoints: cap
                .endpoints
                .iter()
                .map(convert::endpoint_support)
                .collect(),
            max_endpoint_lifetime: (!cap.endpoints.is_empty()).then_some(prost_types::Duration {
                seconds: cap.max_endpoint_lifetime.as_secs() as i64,
                nanos: 0,
            }),
        }),
    }
}

#[tonic::async_trait]
impl ProviderService for ProviderApi {
    async fn list_providers(
        &self,
        request: Request<pb::ListProvidersRequest>,
    ) -> Result<Response<pb::ListProvidersResponse>, Status> {
        let r = request.get_ref();
        let size = page_size(r.page_size, crate::domain::page::MAX_PAGE_SIZE)?;
        let caller = principal(&request);
        let pages = &self.gateway.pages;
        let after = pages.decode(&r.page_token, &caller, &["providers"])?;
        let mut providers: Vec<_> = self
            .gateway
            .registry
            .all()
            .filter(|p| {
                request
                    .extensions()
                    .get::<Grants>()
                    .is_none_or(|g| g.allows(p.id()))
            })
            .filter(|p| after.as_deref().is_none_or(|a| p.id() > a))
            .take(size + 1)
            .map(|p| provider(p.as_ref()))
            .collect();
        let next_page_token = if providers.len() > size {
            providers.truncate(size);
            providers
                .last()
                .map(|p| {
                    pages.encode(
                        p.name.trim_start_matches("providers/"),
                        &caller,
                        &["providers"],
                    )
                })
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListProvidersResponse {
            providers,
            next_page_token,
        }))
    }

    async fn get_provider(
        &self,
        request: Request<pb::GetProviderRequest>,
    ) -> Result<Response<pb::Provider>, Status> {
        let name = ProviderName::parse(&request.get_ref().name, "name")?;
        authorize_provider(&request, &name.0)?;
        let p = self.gateway.registry.get(&name.0)?;
        Ok(Response::new(provider(p.as_ref())))
    }
}
