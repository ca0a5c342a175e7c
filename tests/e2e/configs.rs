//! Every example config in the repository parses and validates, and the documentation (README.md
//! and docs/*.md) says nothing the code would refuse: its configs load, its relative links lead
//! somewhere, the keys in its tables exist, its embedding example calls what the compiled
//! example calls, and its crate graph is the manifests'.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use tunnel_client::ClientConfig;
use tunnel_server::ServerConfig;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_example_config_parses_and_validates() {
    let dir = root().join("examples/configs");
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

/// One markdown file of the documentation.
struct Doc {
    /// Relative to the repository root, for messages.
    name: String,
    path: PathBuf,
    text: String,
}

/// README.md and every page of docs/.
fn docs() -> Vec<Doc> {
    let mut paths = vec![root().join("README.md")];
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    paths.extend(pages);
    paths
        .into_iter()
        .map(|path| Doc {
            name: path
                .strip_prefix(root())
                .unwrap()
                .to_string_lossy()
                .into_owned(),
            text: std::fs::read_to_string(&path).unwrap(),
            path,
        })
        .collect()
}

/// A fenced code block: its info string (`toml`, `rust,ignore`, ...), the line of its opening
/// fence (1-based) and its body.
struct Block {
    info: String,
    line: usize,
    body: String,
}

/// The fenced code blocks of a markdown text, and its other lines (prose, with their numbers).
fn split(text: &str) -> (Vec<Block>, Vec<(usize, &str)>) {
    let mut blocks = Vec::new();
    let mut prose = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut open, fence) {
            (None, Some(info)) => {
                open = Some(Block {
                    info: info.trim().to_string(),
                    line: i + 1,
                    body: String::new(),
                })
            }
            (Some(_), Some(rest)) if rest.trim().is_empty() => blocks.push(open.take().unwrap()),
            (Some(block), _) => {
                block.body.push_str(line);
                block.body.push('\n');
            }
            (None, None) => prose.push((i + 1, line)),
        }
    }
    assert!(open.is_none(), "a code block is never closed");
    (blocks, prose)
}

#[test]
fn every_documented_config_loads_and_validates() {
    // Each ```toml block is a complete config: a client's if it names the server.
    let mut blocks = 0;
    for doc in docs() {
        for block in split(&doc.text).0.into_iter().filter(|b| b.info == "toml") {
            blocks += 1;
            let at = format!("{}:{}", doc.name, block.line);
            let problems: Vec<String> = if block.body.contains("[[clients]]") {
                // A server's clients_file.
                tunnel_server::Clients::from_toml(&block.body, None)
                    .err()
                    .map(|e| vec![e.to_string()])
                    .unwrap_or_default()
            } else if block.body.contains("server_addr") {
                let cfg = ClientConfig::from_toml(&block.body)
                    .unwrap_or_else(|e| panic!("{at}: client config: {e}\n{}", block.body));
                cfg.problems().iter().map(|p| p.to_string()).collect()
            } else {
                let cfg = ServerConfig::from_toml(&block.body)
                    .unwrap_or_else(|e| panic!("{at}: server config: {e}\n{}", block.body));
                cfg.problems().iter().map(|p| p.to_string()).collect()
            };
            assert!(problems.is_empty(), "{at}: {problems:?}\n{}", block.body);
        }
    }
    assert!(
        blocks >= 6,
        "the docs should show server and client configs"
    );
}

/// The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a markdown text's headings (a repeated heading gets `-1`, `-2`, ...).
fn anchors(text: &str) -> HashSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = HashSet::new();
    for (_, line) in split(text).1 {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let heading = heading.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let base = slug(heading);
        let n = seen.entry(base.clone()).or_default();
        out.insert(if *n == 0 { base } else { format!("{base}-{n}") });
        *n += 1;
    }
    out
}

/// The link targets of a prose line, `[text](target)`, outside inline code.
fn link_targets(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    // Between an odd and the next backtick is inline code, where `](` is not a link.
    for (i, part) in line.split('`').enumerate() {
        if i % 2 == 1 {
            continue;
        }
        let mut rest = part;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let end = after.find(')').unwrap_or(after.len());
            out.push(&after[..end]);
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_in_the_docs_leads_somewhere() {
    let mut checked = 0;
    let mut broken = Vec::new();
    for doc in docs() {
        let dir = doc.path.parent().unwrap();
        for (line_no, line) in split(&doc.text).1 {
            for target in link_targets(line) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
                let path = if file.is_empty() {
                    doc.path.clone()
                } else {
                    dir.join(file)
                };
                let at = format!("{}:{line_no}: ({target})", doc.name);
                if !path.exists() {
                    broken.push(format!("{at}: no such file {}", path.display()));
                    continue;
                }
                if anchor.is_empty() {
                    continue;
                }
                if path.extension().is_none_or(|e| e != "md") {
                    broken.push(format!("{at}: an anchor into a file that is not markdown"));
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                if !anchors(&text).contains(anchor) {
                    broken.push(format!("{at}: no heading #{anchor} in {}", path.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(checked >= 50, "only {checked} relative links found");
}

#[test]
fn every_docs_page_is_indexed_and_leads_back_to_the_readme() {
    let index = std::fs::read_to_string(root().join("docs/README.md")).unwrap();
    for doc in docs().into_iter().filter(|d| d.name.starts_with("docs")) {
        let top: String = doc.text.lines().take(6).collect::<Vec<_>>().join("\n");
        assert!(
            top.starts_with("# ") && top.contains("](../README.md)"),
            "{}: start with a title, a one-line summary and a link back to ../README.md",
            doc.name
        );
        let file = doc.path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            file == "README.md" || index.contains(&format!("]({file})")),
            "docs/README.md does not link to {file}"
        );
    }
}

/// Which part of a config a documented key belongs to.
#[derive(Clone, Copy, Debug)]
enum Scope {
    Server,
    Client,
    Proxy,
    Visitor,
}

/// Whether a config accepts `key` in `scope`: some plausible value for it loads. A key the
/// config does not know fails with every value, since unknown keys are errors.
fn accepts(scope: Scope, key: &str) -> bool {
    const VALUES: &[&str] = &[
        "1",
        "true",
        "\"x\"",
        "\"/x\"",
        "\"tcp\"",
        "\"tls\"",
        "\"127.0.0.1\"",
        "\"127.0.0.1:1\"",
        "\"1MiB\"",
        "\"sha256:0000000000000000000000000000000000000000000000000000000000000000\"",
        "[]",
        "[\"1024\"]",
        "{}",
        "{ type = \"tcp\" }",
    ];
    // What each scope needs to load and validate, minus the key under test.
    let base = |lines: &[&str]| -> String {
        lines
            .iter()
            .filter(|l| l.split(' ').next() != Some(key))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let client = [
        "server_addr = \"127.0.0.1:1\"",
        "auth_key = \"a key long enough for any check\"",
    ];
    VALUES.iter().any(|value| {
        let line = format!("{key} = {value}\n");
        match scope {
            Scope::Server => ServerConfig::from_toml(&line).is_ok(),
            Scope::Client => ClientConfig::from_toml(&(base(&client) + &line)).is_ok(),
            Scope::Proxy => {
                let table = base(&["name = \"p\"", "local_addr = \"127.0.0.1:1\""]);
                let doc = format!("{}[[proxies]]\n{table}{line}", base(&client));
                ClientConfig::from_toml(&doc).is_ok()
            }
            Scope::Visitor => {
                let table = base(&["name = \"v\"", "proxy = \"p\"", "bind = \"127.0.0.1:1\""]);
                let doc = format!("{}[[visitors]]\n{table}{line}", base(&client));
                ClientConfig::from_toml(&doc).is_ok()
            }
        }
    })
}

#[test]
fn every_key_in_a_docs_table_is_a_config_key() {
    // Tables whose first column is `key` list config keys, in backticks; the heading above
    // says whose (Server or Client), and `[[proxies]]` / `[[visitors]]` in a cell switch to
    // those tables for the rest of the cell.
    let mut checked = 0;
    let mut unknown = Vec::new();
    for doc in docs() {
        let mut heading = String::new();
        let mut in_key_table = false;
        for (line_no, line) in split(&doc.text).1 {
            if line.starts_with('#') {
                heading = line.trim_start_matches('#').trim().to_lowercase();
            }
            if !line.starts_with('|') {
                in_key_table = false;
                continue;
            }
            let first_cell = line.split('|').nth(1).unwrap_or("").trim();
            if first_cell == "key" {
                in_key_table = true;
                continue;
            }
            if !in_key_table || first_cell.starts_with("---") {
                continue;
            }
            let mut scope = if heading.contains("server") {
                Scope::Server
            } else if heading.contains("client") {
                Scope::Client
            } else {
                panic!(
                    "{}:{line_no}: a key table under \"{heading}\": put it under a Server or \
                     Client heading so that this test knows whose keys it lists",
                    doc.name
                )
            };
            for (i, token) in first_cell.split('`').enumerate() {
                if i % 2 == 0 {
                    continue;
                }
                match token {
                    "[[proxies]]" => scope = Scope::Proxy,
                    "[[visitors]]" => scope = Scope::Visitor,
                    key if key.chars().all(|c| c.is_ascii_lowercase() || c == '_') => {
                        checked += 1;
                        if !accepts(scope, key) {
                            unknown.push(format!("{}:{line_no}: {scope:?} `{key}`", doc.name));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "documented keys the config does not accept:\n{}",
        unknown.join("\n")
    );
    assert!(checked >= 60, "only {checked} documented keys found");
}

#[test]
fn the_embedding_snippet_calls_what_the_compiled_example_calls() {
    // The docs' Rust is an excerpt of examples/embed.rs, which the build compiles: every
    // function, method and type it names must be named there too.
    let example = std::fs::read_to_string(root().join("examples/embed.rs")).unwrap();
    let words: HashSet<&str> = example
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .collect();
    let mut blocks = 0;
    for doc in docs() {
        for block in split(&doc.text).0 {
            if !block.info.starts_with("rust") {
                continue;
            }
            blocks += 1;
            for line in block.body.lines() {
                let code = line.split("//").next().unwrap();
                let mut rest = code;
                while let Some(start) = rest.find(|c: char| c.is_alphabetic() || c == '_') {
                    let tail = &rest[start..];
                    let end = tail
                        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                        .unwrap_or(tail.len());
                    let (word, after) = tail.split_at(end);
                    if (after.starts_with('(') || after.starts_with("::")) && !words.contains(word)
                    {
                        panic!(
                            "{}:{}: `{word}` is not in examples/embed.rs: keep the snippet an \
                             excerpt of the example",
                            doc.name, block.line
                        );
                    }
                    rest = after;
                }
            }
        }
    }
    assert!(blocks >= 1, "the embedding example is gone from the docs");
}

#[test]
fn the_link_and_anchor_parsing_follows_github() {
    assert_eq!(
        slug("Reloading a client's config"),
        "reloading-a-clients-config"
    );
    assert_eq!(slug("TLS to the local service"), "tls-to-the-local-service");
    assert_eq!(
        slug("Checking a config (`--check`)"),
        "checking-a-config---check"
    );
    assert_eq!(
        link_targets("see [a](x.md#b) and `[c](not-a-link)`, [d](../y)"),
        ["x.md#b", "../y"]
    );
    let (blocks, prose) = split("a\n```toml\nk = 1\n```\nb\n");
    assert_eq!(blocks.len(), 1);
    assert_eq!((blocks[0].info.as_str(), blocks[0].line), ("toml", 2));
    assert_eq!(prose, [(1, "a"), (5, "b")]);
}

/// The `tunnel-*` crates a manifest depends on outside its tests.
fn tunnel_dependencies(manifest: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut in_dependencies = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_dependencies = line == "[dependencies]"
                || (line.starts_with("[target.") && line.ends_with(".dependencies]"));
        } else if in_dependencies && line.starts_with("tunnel-") {
            let name = line.split(['.', '=', ' ']).next().unwrap();
            out.insert(name.to_string());
        }
    }
    out
}

#[test]
fn the_documented_crate_graph_is_the_manifests_graph() {
    // docs/how-it-works.md draws each crate's dependencies as
    // `tunnel-server ──▶ proto, transport, ...`; the manifests must agree.
    let page = std::fs::read_to_string(root().join("docs/how-it-works.md")).unwrap();
    let graph = split(&page)
        .0
        .into_iter()
        .find(|b| {
            b.body.contains("──▶")
                && b.body
                    .lines()
                    .all(|l| l.starts_with("tunnel-") || l.starts_with("tls-tunnel "))
        })
        .expect("docs/how-it-works.md: the dependency graph block is gone");
    let mut crates = 0;
    for line in graph.body.lines() {
        let Some(krate) = line.split_whitespace().next() else {
            continue;
        };
        crates += 1;
        let drawn: HashSet<String> = line
            .split_once("──▶")
            .map(|(_, deps)| deps.split('(').next().unwrap())
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(|d| format!("tunnel-{d}"))
            .collect();
        let manifest = if krate == "tls-tunnel" {
            root().join("Cargo.toml")
        } else {
            root().join("crates").join(krate).join("Cargo.toml")
        };
        let manifest_text = std::fs::read_to_string(&manifest).unwrap_or_else(|e| {
            panic!(
                "docs/how-it-works.md:{}: {krate} is no crate here ({}: {e})",
                graph.line,
                manifest.display()
            )
        });
        let real = tunnel_dependencies(&manifest_text);
        assert_eq!(
            drawn,
            real,
            "docs/how-it-works.md:{}: the graph's line for {krate} differs from {}",
            graph.line,
            manifest.display()
        );
    }
    assert!(crates >= 9, "the graph shows {crates} crates");
}
