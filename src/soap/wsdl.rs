//! The bundled WSDL, served with its `soap:address` pointing where the client should call.

/// The contract, as committed in `wsdl/refunds.wsdl`.
pub const WSDL: &str = include_str!("../../wsdl/refunds.wsdl");

const PLACEHOLDER_ADDRESS: &str = "http://localhost:8080/soap/refunds";

/// The WSDL with every port's address set to `address`.
pub fn with_address(address: &str) -> String {
    let escaped = address
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;");
    WSDL.replace(
        &format!("location=\"{PLACEHOLDER_ADDRESS}\""),
        &format!("location=\"{escaped}\""),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_both_ports() {
        let wsdl = with_address("https://shop.example/api/?gate=refunds/confirmRefund/1/soap");
        assert_eq!(
            wsdl.matches(
                "location=\"https://shop.example/api/?gate=refunds/confirmRefund/1/soap\""
            )
            .count(),
            2
        );
        assert!(!wsdl.contains(PLACEHOLDER_ADDRESS));
    }
}
