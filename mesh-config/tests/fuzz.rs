//! Fuzz targets (property-based, stable toolchain): the YAML loader on mutated real configs
//! and on arbitrary text, and the string matchers against the regex engine as the model.
//!
//! The case count is proptest's: 256 by default (what CI runs), `PROPTEST_CASES=1000000`
//! for a long run (`benches/fuzz.sh`).

use std::path::Path;

use mesh_config::{
    api::StringMatch,
    load::{LoadOptions, load_str},
    string_match::StringMatcher,
};
use proptest::prelude::*;

/// The Bookinfo configs this repository ships (the seed's samples, ours).
fn corpus() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/bookinfo/config");
    let mut out = Vec::new();
    let mut dirs = vec![root];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().map(Result::unwrap) {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml") {
                out.push((p.display().to_string(), std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    out.sort();
    assert!(out.len() > 10, "the corpus is the repository's Bookinfo configs");
    out
}

/// One edit of a text: what a careless hand or a hostile writer does to a file.
#[derive(Clone, Debug)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, String),
    Replace(usize, char),
    DuplicateLine(usize),
    Indent(usize, usize),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let noise = prop_oneof![
        Just(": ".to_string()),
        Just("- ".to_string()),
        Just("\n".to_string()),
        Just("{".to_string()),
        Just("[".to_string()),
        Just("&a ".to_string()),
        Just("*a".to_string()),
        Just("!!binary ".to_string()),
        Just("'".to_string()),
        Just("\"\\u".to_string()),
        Just("18446744073709551615ms".to_string()),
        Just("%".to_string()),
        "\\PC{0,8}",
    ];
    prop_oneof![
        (any::<usize>(), 0usize..40).prop_map(|(a, n)| Edit::Delete(a, n)),
        (any::<usize>(), noise).prop_map(|(a, s)| Edit::Insert(a, s)),
        (any::<usize>(), any::<char>()).prop_map(|(a, c)| Edit::Replace(a, c)),
        any::<usize>().prop_map(Edit::DuplicateLine),
        (any::<usize>(), 0usize..6).prop_map(|(a, n)| Edit::Indent(a, n)),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

/// The char boundary at or before `at % (len + 1)`.
fn boundary(text: &str, at: usize) -> usize {
    let mut i = at % (text.len() + 1);
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn apply(text: &mut String, e: &Edit) {
    match e {
        Edit::Delete(a, n) => {
            let from = boundary(text, *a);
            let to = boundary(text, from + n.min(&(text.len() - from)));
            text.replace_range(from..to.max(from), "");
        }
        Edit::Insert(a, s) => {
            let at = boundary(text, *a);
            text.insert_str(at, s);
        }
        Edit::Replace(a, c) => {
            let at = boundary(text, *a);
            if let Some(old) = text[at..].chars().next() {
                text.replace_range(at..at + old.len_utf8(), &c.to_string());
            }
        }
        Edit::DuplicateLine(a) | Edit::Indent(a, _) => {
            let lines: Vec<&str> = text.split('\n').collect();
            let k = a % lines.len();
            let mut out: Vec<String> = lines.iter().map(|l| (*l).to_string()).collect();
            match e {
                Edit::DuplicateLine(_) => out.insert(k, lines[k].to_string()),
                Edit::Indent(_, n) => out[k] = format!("{}{}", " ".repeat(*n), lines[k].trim_start()),
                _ => unreachable!(),
            }
            *text = out.join("\n");
        }
        Edit::Truncate(a) => {
            let at = boundary(text, *a);
            text.truncate(at);
        }
    }
}

/// Whatever the text, the loader answers (never panics), and every finding names the file
/// and a line of it.
fn check_load(label: &str, text: &str) -> Result<(), TestCaseError> {
    let loaded = load_str(label, text, &LoadOptions::default());
    // YAML breaks lines at LF, CRLF and a lone CR.
    let lines = text.replace("\r\n", "\n").split(['\n', '\r']).count() as u32;
    for d in loaded.errors() {
        prop_assert_eq!(&d.file, label);
        prop_assert!(d.line <= lines + 1, "line {} of a {}-line file: {}", d.line, lines, d);
        prop_assert!(!d.message.is_empty());
    }
    Ok(())
}

proptest! {
    #[test]
    fn fuzz_yaml_loader_on_mutated_configs(file in any::<prop::sample::Index>(), edits in prop::collection::vec(edit(), 1..6)) {
        thread_local!(static CORPUS: Vec<(String, String)> = corpus());
        let (label, mut text) = CORPUS.with(|c| c[file.index(c.len())].clone());
        for e in &edits {
            apply(&mut text, e);
        }
        check_load(&label, &text)?;
    }

    #[test]
    fn fuzz_yaml_loader_on_arbitrary_text(text in "\\PC{0,300}|[-:{}\\[\\],&*!|>'\" \n\ta-z0-9#%@`]{0,300}") {
        check_load("fuzz.yaml", &text)?;
    }

    /// The matchers against the regex engine as the model: exact and prefix are the
    /// anchored literal, regex a full match (RE2 syntax: an invalid one is refused, never
    /// a panic).
    #[test]
    fn fuzz_string_matchers_against_the_regex_model(
        kind in 0u8..3,
        pattern in "[a-c.*+?()|\\[\\]^$\\\\{}0-9]{0,12}|\\PC{0,12}",
        value in "[a-c.*+?()0-9]{0,16}|\\PC{0,16}",
    ) {
        let sm = match kind {
            0 => StringMatch::Exact(pattern.clone()),
            1 => StringMatch::Prefix(pattern.clone()),
            _ => StringMatch::Regex(pattern.clone()),
        };
        let model = match kind {
            0 => Some(value == pattern),
            1 => Some(value.starts_with(&pattern)),
            _ => regex::Regex::new(&format!("^(?:{pattern})$")).ok().map(|r| r.is_match(&value)),
        };
        match (StringMatcher::try_from(&sm), model) {
            (Ok(m), Some(want)) => {
                prop_assert_eq!(m.matches(&value), want);
            }
            (Err(_), None) => {}
            (m, model) => prop_assert!(false, "matcher {:?} but model {:?}", m.is_ok(), model),
        }
    }
}
