//! Every example config in the repository parses and validates.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use tunnel_client::ClientConfig;
use tunnel_server::ServerConfig;

#[test]
fn every_example_config_parses_and_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/configs");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        seen += 1;
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("server") {
            let cfg = ServerConfig::from_file(&path).unwrap();
            assert!(cfg.problems().is_empty(), "{name}: {:?}", cfg.problems());
        } else {
            let cfg = ClientConfig::from_file(&path).unwrap();
            assert!(cfg.problems().is_empty(), "{name}: {:?}", cfg.problems());
        }
    }
    assert!(
        seen >= 4,
        "expected the example configs in {}",
        dir.display()
    );
}

#[test]
fn readme_config_snippets_parse() {
    // Every ```toml block of the README is a complete server or client config.
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut blocks = 0;
    let mut rest = readme.as_str();
    while let Some(start) = rest.find("```toml\n") {
        let body = &rest[start + 8..];
        let end = body.find("```").unwrap();
        let block = &body[..end];
        rest = &body[end + 3..];
        blocks += 1;
        if block.contains("server_addr") {
            ClientConfig::from_toml(block)
                .unwrap_or_else(|e| panic!("README block {blocks}: {e}\n{block}"));
        } else {
            ServerConfig::from_toml(block)
                .unwrap_or_else(|e| panic!("README block {blocks}: {e}\n{block}"));
        }
    }
    assert!(blocks >= 2, "README should show server and client configs");
}
