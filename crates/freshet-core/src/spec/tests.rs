use super::*;

fn parse(text: &str) -> Result<PipelineSpec, SpecError> {
    PipelineSpec::from_toml(text, Path::new("p.toml"))
}

#[test]
fn the_documented_example_parses() {
    let text = include_str!("../../../../deploy/pipelines/foundation.toml");
    let spec = parse(text).expect("the acceptance pipeline is valid");
    assert_eq!(spec.sources.len(), 1);
    assert_eq!(spec.feature_views[0].get_ref().features.len(), 13);
}

#[test]
fn unknown_key_names_file_and_line() {
    let err = parse("[[source]]\nname = \"s\"\nentity = \"e\"\nevent_time = \"ts\"\ncolour = 1\n")
        .expect_err("unknown key");
    assert_eq!((err.file.as_path(), err.line), (Path::new("p.toml"), 5));
    assert!(err.message.contains("unknown field `colour`"), "{err}");
}
