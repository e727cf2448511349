//! Writing response envelopes: a string builder that escapes text, nothing before `<?xml`.

use super::envelope::SoapVersion;

pub struct XmlOut {
    buffer: String,
}

impl XmlOut {
    /// Starts `<?xml …?><soap:Envelope …><soap:Body>` for `version`.
    pub fn envelope(version: SoapVersion) -> XmlOut {
        let mut buffer = String::with_capacity(1024);
        buffer.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<soap:Envelope xmlns:soap=\"");
        buffer.push_str(version.namespace());
        buffer.push_str("\"><soap:Body>");
        XmlOut { buffer }
    }

    pub fn open(&mut self, name: &str) {
        self.buffer.push('<');
        self.buffer.push_str(name);
        self.buffer.push('>');
    }

    /// Opens an element that declares `namespace` as the default namespace.
    pub fn open_in(&mut self, name: &str, namespace: &str) {
        self.buffer.push('<');
        self.buffer.push_str(name);
        self.buffer.push_str(" xmlns=\"");
        self.buffer.push_str(namespace);
        self.buffer.push_str("\">");
    }

    pub fn close(&mut self, name: &str) {
        self.buffer.push_str("</");
        self.buffer.push_str(name);
        self.buffer.push('>');
    }

    pub fn leaf(&mut self, name: &str, text: &str) {
        self.open(name);
        self.text(text);
        self.close(name);
    }

    pub fn text(&mut self, text: &str) {
        for character in text.chars() {
            match character {
                '&' => self.buffer.push_str("&amp;"),
                '<' => self.buffer.push_str("&lt;"),
                '>' => self.buffer.push_str("&gt;"),
                '"' => self.buffer.push_str("&quot;"),
                // Characters XML 1.0 cannot carry at all are dropped rather than sent broken.
                c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
                '\r' => self.buffer.push_str("&#13;"),
                c => self.buffer.push(c),
            }
        }
    }

    pub fn raw(&mut self, markup: &str) {
        self.buffer.push_str(markup);
    }

    /// Closes Body and Envelope and returns the document.
    pub fn finish(mut self) -> String {
        self.buffer.push_str("</soap:Body></soap:Envelope>");
        self.buffer
    }
}
