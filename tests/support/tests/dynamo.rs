//! The shared endpoint's contract: unless `EDGE_SESSION_TEST_DYNAMODB_ENDPOINT`
//! names another, it is one embedded server for the whole process, on a
//! file under Cargo's temporary directory, in a directory of this process's
//! own; and a fresh table's name is never given twice.

use std::collections::HashSet;
use std::path::Path;

use edge_session_sync::Endpoint;
use edge_session_test_support::dynamo::{endpoint, unique_name, ENDPOINT_VAR};

#[test]
fn the_shared_server_is_one_per_process_on_a_file_under_cargos_temporary_directory() {
    if std::env::var(ENDPOINT_VAR).is_ok_and(|url| !url.is_empty()) {
        eprintln!("{ENDPOINT_VAR} names another endpoint: nothing embedded to check");
        return;
    }
    let Endpoint::Embedded(first) = endpoint() else {
        panic!("the embedded server by default");
    };
    let Endpoint::Embedded(again) = endpoint() else {
        panic!("the embedded server by default");
    };
    assert_eq!(first, again, "one server for the process");
    let mine = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("test-dynamodb")
        .join(std::process::id().to_string());
    assert!(
        mine.join("dynamodb.sqlite3").is_file(),
        "its file is in {}",
        mine.display()
    );
}

#[test]
fn unique_names_are_unique() {
    let names: HashSet<String> = (0..1000).map(|_| unique_name("t")).collect();
    assert_eq!(names.len(), 1000);
    assert!(names.iter().all(|name| name.starts_with("t-")));
}
