//! A refunds gateway compatible with the IdoSell Admin API "Refunds" gate.
//!
//! Layout: [`server`] accepts HTTP and routes requests to a face; [`soap`] parses envelopes and
//! writes responses; [`admin`] is the admin panel (HTML forms over the same operations);
//! [`operations`] is the registry of the nine operations and binds their
//! parameters; [`refunds`] is the domain (rules, fault codes) and knows no XML, JSON, HTTP or
//! SQL; [`store`] holds every SQL statement; [`money`] makes amounts exact; [`shop`] reads shop
//! documents; [`cli`] is the command line behind the thin `main`.

pub mod admin;
pub mod cli;
pub mod clock;
pub mod fatal_signal;
pub mod log_output;
pub mod metrics;
pub mod money;
pub mod operations;
pub mod operators;
pub mod outbox;
pub mod proof_format;
pub mod refunds;
pub mod rest;
pub mod server;
pub mod shop;
pub mod soap;
pub mod store;
pub mod webhooks;

pub use server::{Config, MetricsToken, run, run_on};

/// The layers drawn in the README hold in the source: the domain imports no adapter, face or
/// serialization crate, and the clock and money import nothing of the service (a type that
/// needed them would be in the wrong module).
#[cfg(test)]
mod layers {
    use std::path::Path;

    /// The code lines of `file` (comments left out) naming a path that starts with one of
    /// `roots` (`crate::store`, `rusqlite`, …) and is not one of `allowed`.
    fn imports(file: &Path, roots: &[&str], allowed: &[&str]) -> Vec<String> {
        let text = std::fs::read_to_string(file).expect("a source file");
        text.lines()
            .map(str::trim)
            .filter(|line| !line.starts_with("//"))
            .filter(|line| {
                roots.iter().any(|root| {
                    line.match_indices(&format!("{root}::")).any(|(at, _)| {
                        let before = line[..at].chars().next_back();
                        let starts_word =
                            before.is_none_or(|c| !c.is_alphanumeric() && c != '_' && c != ':');
                        starts_word && !allowed.iter().any(|ok| line[at..].starts_with(ok))
                    })
                })
            })
            .map(|line| format!("{}: {line}", file.display()))
            .collect()
    }

    fn sources(folder: &str) -> Vec<std::path::PathBuf> {
        let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join(folder);
        let mut files: Vec<_> = std::fs::read_dir(&folder)
            .expect("a source folder")
            .map(|entry| entry.expect("a folder entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
            .collect();
        files.sort();
        files
    }

    #[test]
    fn the_domain_imports_no_adapter_face_or_wire_format() {
        let roots = [
            "crate",
            "quick_xml",
            "serde_json",
            "hyper",
            "rusqlite",
            "postgres",
            "askama",
        ];
        let allowed = ["crate::refunds", "crate::money", "crate::clock"];
        let found: Vec<String> = sources("src/refunds")
            .iter()
            .flat_map(|file| imports(file, &roots, &allowed))
            .collect();
        assert!(
            found.is_empty(),
            "src/refunds/ reaches outward:\n{}",
            found.join("\n")
        );
    }

    #[test]
    fn clock_and_money_import_nothing_of_the_service() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let found: Vec<String> = ["src/clock.rs", "src/money.rs"]
            .iter()
            .flat_map(|file| imports(&root.join(file), &["crate"], &[]))
            .collect();
        assert!(
            found.is_empty(),
            "clock or money imports the service:\n{}",
            found.join("\n")
        );
    }
}
