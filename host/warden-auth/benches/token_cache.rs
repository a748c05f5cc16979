//! The cache-hit path of `TokenProvider::get_token`: what every Exchange call pays once a
//! token is cached. Run: `cargo bench -p warden-auth --bench token_cache`.

use async_trait::async_trait;
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use warden_auth::credential::CredentialKind;
use warden_auth::endpoint::EndpointVersion;
use warden_auth::{
    Credential, HttpRequest, HttpResponse, HttpTransport, Secret, SendFailure, TokenProvider,
};

/// Answers every request with a one-hour token, counting requests.
#[derive(Debug, Default)]
struct FixedTransport {
    sent: AtomicU64,
}

#[async_trait]
impl HttpTransport for FixedTransport {
    async fn send(&self, _request: HttpRequest) -> Result<HttpResponse, SendFailure> {
        self.sent.fetch_add(1, Ordering::Relaxed);
        Ok(HttpResponse { status: 200, headers: vec![], body: br#"{"token_type":"Bearer","expires_in":3599,"access_token":"header.payload.signature"}"#.to_vec() })
    }
}

const SCOPE: &str = "https://outlook.office365.com/.default";

fn cache_hit(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let transport = Arc::new(FixedTransport::default());
    let credential = Credential {
        authority_host: "https://login.microsoftonline.com".into(),
        tenant: "contoso.onmicrosoft.com".into(),
        client_id: "22222222-2222-2222-2222-222222222222".into(),
        endpoint_version: EndpointVersion::V2,
        kind: CredentialKind::ClientSecret(Secret::new("bench".into())),
    };
    let provider = TokenProvider::new(credential, transport.clone());
    runtime.block_on(provider.get_token(SCOPE)).unwrap();

    c.bench_function("get_token cache hit", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(provider.get_token(black_box(SCOPE)).await.unwrap()) })
    });
    c.bench_function("get_token cache hit, 16 concurrent callers", |b| {
        b.to_async(&runtime).iter(|| async {
            let calls: Vec<_> = (0..16)
                .map(|_| {
                    let provider = provider.clone();
                    tokio::spawn(async move { provider.get_token(SCOPE).await.unwrap() })
                })
                .collect();
            for call in calls {
                black_box(call.await.unwrap());
            }
        })
    });
    assert_eq!(
        transport.sent.load(Ordering::Relaxed),
        1,
        "every benchmarked call was a cache hit"
    );
}

criterion_group!(benches, cache_hit);
criterion_main!(benches);
