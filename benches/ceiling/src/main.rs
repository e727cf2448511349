//! Fixed-response ceiling for benches/load: hyper 1.x + tokio answering every request with
//! the same ~600-byte SOAP body, after reading the request body. Usage: ceiling ADDR
use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{server::conn::http1, service::service_fn, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const BODY: &str = concat!(
    r#"<?xml version="1.0" encoding="utf-8"?>"#,
    r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:r="urn:refunds-gateway:refunds">"#,
    r#"<soap:Body><r:getRefundStatusResponse><r:getRefundStatusResult>"#,
    r#"<r:errors><r:faultCode>0</r:faultCode><r:faultString></r:faultString></r:errors>"#,
    r#"<r:refundDateAdd>2026-11-19 10:00:00</r:refundDateAdd><r:refundValue>20.00</r:refundValue>"#,
    r#"<r:refundStatus>New</r:refundStatus><r:refundDateConfirm></r:refundDateConfirm>"#,
    r#"<r:refundExternalId></r:refundExternalId><r:refundCurrency>PLN</r:refundCurrency>"#,
    r#"<r:padding>xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx</r:padding>"#,
    r#"</r:getRefundStatusResult></r:getRefundStatusResponse></soap:Body></soap:Envelope>"#
);

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8099".into());
    let listener = TcpListener::bind(&addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                let _ = req.into_body().collect().await;
                Ok::<_, Infallible>(
                    Response::builder()
                        .header("content-type", "text/xml; charset=utf-8")
                        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
                        .unwrap(),
                )
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
