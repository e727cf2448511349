//! Reading request headers: API keys, the idempotency key.

use hyper::Request;
use hyper::body::Incoming;

use crate::soap;

/// The `Idempotency-Key` header: printable ASCII, at most 255 bytes.
pub(super) fn idempotency_key_of(request: &Request<Incoming>) -> Result<Option<String>, String> {
    let Some(value) = request.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| "Idempotency-Key must be printable ASCII".to_owned())?
        .trim();
    if key.is_empty() || key.len() > soap::envelope::MAX_IDEMPOTENCY_KEY {
        return Err(format!(
            "Idempotency-Key must be 1 to {} characters",
            soap::envelope::MAX_IDEMPOTENCY_KEY
        ));
    }
    Ok(Some(key.to_owned()))
}

/// An API key from `X-API-KEY` or `Authorization: Bearer`.
pub(super) fn api_key_of(request: &Request<Incoming>) -> Option<String> {
    if let Some(key) = header(request, "x-api-key") {
        return Some(key.trim().to_owned());
    }
    let authorization = header(request, "authorization")?;
    let (scheme, key) = authorization.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| key.trim().to_owned())
}

pub(super) fn header<'r>(request: &'r Request<Incoming>, name: &str) -> Option<&'r str> {
    request
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
}
