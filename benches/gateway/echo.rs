//! The baseline: a bare tonic server, no middleware, serving the same method as scenario (b)
//! (`ProviderService/GetProvider`, so the same request bytes reach both) by echoing the name.
//! It runs in its own process (`--echo-server ADDR`) on the same runtime as the gateway
//! (`streamgate::runtime::build(0)`: one worker per core it is pinned to, and tokio's
//! current-thread scheduler when that is one).

use std::net::SocketAddr;

use streamgate::pb;
use streamgate::pb::provider_service_server::{ProviderService, ProviderServiceServer};
use tonic::{Request, Response, Status};

struct Echo;

#[tonic::async_trait]
impl ProviderService for Echo {
    async fn list_providers(
        &self,
        _request: Request<pb::ListProvidersRequest>,
    ) -> Result<Response<pb::ListProvidersResponse>, Status> {
        Ok(Response::new(pb::ListProvidersResponse::default()))
    }

    async fn get_provider(
        &self,
        request: Request<pb::GetProviderRequest>,
    ) -> Result<Response<pb::Provider>, Status> {
        Ok(Response::new(pb::Provider {
            name: request.into_inner().name,
            kind: "echo".into(),
            ..Default::default()
        }))
    }
}

/// Serves until killed.
pub fn serve(addr: SocketAddr) {
    let runtime = streamgate::runtime::build(0).expect("runtime");
    runtime.block_on(async {
        tonic::transport::Server::builder()
            .add_service(ProviderServiceServer::new(Echo))
            .serve(addr)
            .await
            .expect("echo server");
    });
}
