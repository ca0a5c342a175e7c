//! The loader against structs shaped like the engines' configs: nested `[[tables]]`, a
//! flattened struct, an enum, required keys and validated values.
#![allow(clippy::unwrap_used)]

use serde::Deserialize;

use super::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Top {
    server_addr: String,
    #[serde(default)]
    connections: usize,
    #[serde(default, deserialize_with = "even")]
    even: u8,
    #[serde(default)]
    proxies: Vec<Proxy>,
    #[serde(default)]
    visitors: Vec<Visitor>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Proxy {
    name: String,
    #[serde(rename = "type", default)]
    kind: Kind,
    #[serde(default)]
    local_addr: String,
    #[serde(default)]
    publish_port: Option<u16>,
    #[serde(flatten)]
    extra: Extra,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    #[default]
    Tcp,
    Http,
}

#[derive(Debug, Default, Deserialize)]
#[allow(dead_code)]
struct Extra {
    #[serde(default)]
    max_local_conns: usize,
    #[serde(default)]
    domains: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Visitor {
    name: String,
    proxy: String,
    bind: String,
}

fn even<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let n = u8::deserialize(d)?;
    if n % 2 == 1 {
        return Err(serde::de::Error::custom(format!("{n} is odd")));
    }
    Ok(n)
}

fn schema() -> Schema {
    let mut keys = vec!["name", "type", "local_addr", "publish_port"];
    keys.extend(fields_of::<Extra>());
    Schema::new().table("proxies[]", keys)
}

/// `LINE:COLUMN field` of each problem, in order.
fn places(text: &str) -> Vec<String> {
    problems(text)
        .iter()
        .map(|p| {
            let at = p.at.unwrap();
            format!("{}:{} {}", at.line, at.column, p.field)
        })
        .collect()
}

fn problems(text: &str) -> Vec<ConfigProblem> {
    parse::<Top>(text, &schema()).unwrap_err()
}

#[test]
fn a_good_file_parses() {
    let top = parse::<Top>(
        "server_addr = \"a:1\"\n[[proxies]]\nname = \"p\"\nmax_local_conns = 3\n",
        &schema(),
    )
    .unwrap();
    assert_eq!(top.proxies[0].extra.max_local_conns, 3);
}

#[test]
fn every_problem_is_reported_at_its_line_in_one_run() {
    let text = "\
server_addr = \"a:1\"
conections = 2
even = 3

[[proxies]]
name = \"web\"
local_adr = \"x:1\"
publish_port = 70000

[[proxies]]
name = \"api\"
type = \"htp\"
max_local_conns = \"many\"

[[visitors]]
name = \"v\"
";
    assert_eq!(
        places(text),
        [
            "2:1 conections",
            "3:8 even",
            "7:1 proxies[0].local_adr",
            "8:16 proxies[0].publish_port",
            "12:8 proxies[1].type",
            "13:19 proxies[1].max_local_conns",
            "15:1 visitors[0].proxy",
            "15:1 visitors[0].bind",
        ]
    );
    let all = problems(text);
    let text_of = |field: &str| {
        all.iter()
            .find(|p| p.field == field)
            .map(|p| p.message.clone())
            .unwrap()
    };
    assert!(
        text_of("conections").contains("did you mean `connections`?"),
        "{all:?}"
    );
    assert_eq!(text_of("even"), "3 is odd");
    // The flattened table: serde names no key and lists none; both come back.
    let typo = text_of("proxies[0].local_adr");
    assert!(
        typo.contains("did you mean `local_addr`?") && typo.contains("max_local_conns"),
        "{typo}"
    );
    assert!(
        text_of("proxies[0].publish_port").contains("70000"),
        "{all:?}"
    );
    assert!(
        text_of("proxies[1].type").contains("did you mean `http`?"),
        "{all:?}"
    );
    assert!(
        text_of("proxies[1].max_local_conns").contains("expected usize"),
        "{all:?}"
    );
    assert_eq!(
        text_of("visitors[0].bind"),
        "required, but missing from this table"
    );
}

#[test]
fn a_missing_top_level_key_and_a_bad_one_inside_are_both_found() {
    assert_eq!(
        places("[[proxies]]\nname = 1\n"),
        ["1:1 server_addr", "2:8 proxies[0].name"]
    );
}

#[test]
fn syntax_errors_are_reported_with_the_type_errors_after_them() {
    let text = "server_addr = \"a:1\"\nconnections = \"x\"\nbad line\n\
                [[proxies]]\nname = \"p\"\nname = \"q\"\n";
    let shown: Vec<String> = problems(text).iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "2:15: connections: invalid type: string \"x\", expected usize",
            "3:5: syntax: key with no value, expected `=`",
            "6:1: syntax: duplicate key",
        ]
    );
}

#[test]
fn a_required_key_lost_to_a_syntax_error_is_not_also_called_missing() {
    let text =
        "server_addr = \"a:1\nbad line\n[[visitors]]\nname = \"v\"\nproxy = 'p\nbind = \"b\"\n";
    let shown: Vec<String> = problems(text).iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "1:19: syntax: invalid basic string, expected `\"`",
            "2:5: syntax: key with no value, expected `=`",
            "5:11: visitors[0].proxy: TOML syntax: invalid literal string, expected `'`",
        ]
    );
}

#[test]
fn two_identical_errors_in_one_flattened_table_are_both_found() {
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        #[serde(flatten)]
        inner: Inner,
    }
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        #[serde(default)]
        a: u8,
        #[serde(default)]
        b: u8,
    }
    let p = parse::<Outer>("name = \"n\"\na = \"x\"\nb = \"x\"\n", &Schema::new()).unwrap_err();
    let fields: Vec<_> = p.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["a", "b"]);
}

#[test]
fn the_number_of_problems_is_bounded() {
    let mut text = String::from("server_addr = \"a:1\"\n");
    for i in 0..200 {
        text.push_str(&format!("unknown_{i} = 1\n"));
    }
    let all = problems(&text);
    assert_eq!(all.len(), MAX_PROBLEMS + 1);
    assert!(
        all[MAX_PROBLEMS].message.contains("stopped after"),
        "{all:?}"
    );
}

#[test]
fn later_checks_are_placed_at_their_key_or_its_table() {
    let text = "server_addr = \"a\"\n\n[[proxies]]\nname = \"p\"\n";
    let mut found = vec![
        ConfigProblem::new("server_addr", "not host:port"),
        ConfigProblem::new("proxies[0].local_addr", "required"),
        ConfigProblem::new("auth_key", "set auth_key or auth_key_file"),
    ];
    locate(text, &mut found);
    let at: Vec<_> = found.iter().map(|p| p.at.map(|a| a.line)).collect();
    assert_eq!(at, [Some(1), Some(3), None]);
}
