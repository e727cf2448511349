//! SOAP Faults: for requests that are not a well-formed call (malformed envelope, unknown
//! operation, DOCTYPE, limits). Business errors are not faults; they travel in `errors`.

use super::envelope::SoapVersion;
use super::writer::XmlOut;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultCode {
    /// 1.1 `Client`, 1.2 `Sender`: the request is at fault.
    Client,
    /// 1.1 `Server`, 1.2 `Receiver`: the service is at fault.
    Server,
    VersionMismatch,
    MustUnderstand,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub version: SoapVersion,
    pub code: FaultCode,
    pub reason: String,
    /// Overrides the usual status (413 for an oversize body).
    pub status: Option<u16>,
}

impl Fault {
    pub fn new(version: SoapVersion, code: FaultCode, reason: impl Into<String>) -> Fault {
        Fault {
            version,
            code,
            reason: reason.into(),
            status: None,
        }
    }

    pub fn client(version: SoapVersion, reason: impl Into<String>) -> Fault {
        Fault::new(version, FaultCode::Client, reason)
    }

    pub fn server(version: SoapVersion) -> Fault {
        Fault::new(
            version,
            FaultCode::Server,
            "the gateway failed to answer; the cause is in its log",
        )
    }

    pub fn with_status(mut self, status: u16) -> Fault {
        self.status = Some(status);
        self
    }

    /// SOAP 1.1 answers every fault with 500; SOAP 1.2 answers `Sender` faults with 400.
    pub fn status(&self) -> u16 {
        if let Some(status) = self.status {
            return status;
        }
        match (self.version, self.code) {
            (SoapVersion::V12, FaultCode::Client) => 400,
            _ => 500,
        }
    }

    fn code_name(&self) -> &'static str {
        match (self.version, self.code) {
            (SoapVersion::V11, FaultCode::Client) => "soap:Client",
            (SoapVersion::V11, FaultCode::Server) => "soap:Server",
            (SoapVersion::V12, FaultCode::Client) => "soap:Sender",
            (SoapVersion::V12, FaultCode::Server) => "soap:Receiver",
            (_, FaultCode::VersionMismatch) => "soap:VersionMismatch",
            (_, FaultCode::MustUnderstand) => "soap:MustUnderstand",
        }
    }

    pub fn to_xml(&self) -> String {
        let mut out = XmlOut::envelope(self.version);
        match self.version {
            SoapVersion::V11 => {
                out.open("soap:Fault");
                out.leaf("faultcode", self.code_name());
                out.leaf("faultstring", &self.reason);
                out.close("soap:Fault");
            }
            SoapVersion::V12 => {
                out.open("soap:Fault");
                out.open("soap:Code");
                out.leaf("soap:Value", self.code_name());
                out.close("soap:Code");
                out.open("soap:Reason");
                out.raw("<soap:Text xml:lang=\"en\">");
                out.text(&self.reason);
                out.raw("</soap:Text>");
                out.close("soap:Reason");
                out.close("soap:Fault");
            }
        }
        out.finish()
    }
}
