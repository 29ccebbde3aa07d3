//! The default images are the ones the project builds (`images/build`, `images/Dockerfile`):
//! the project's registry, tagged with the release version, which is the chart's
//! `appVersion` (never `latest`).

use std::path::Path;

use switchboard_crds::cluster::{
    IMAGE_REGISTRY, IMAGE_TAG, ImageSpec, ManagedRedisSpec, ManagedTurnSpec,
};

fn chart_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/switchboard")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The value of the first `key: value` line, quotes removed.
fn yaml_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let v = l.trim_start().strip_prefix(&format!("{key}:"))?;
        Some(v.trim().trim_matches('"').to_string())
    })
}

#[test]
fn the_chart_app_version_is_the_image_tag() {
    let chart = chart_file("Chart.yaml");
    assert_eq!(yaml_value(&chart, "appVersion").as_deref(), Some(IMAGE_TAG));
    assert_ne!(IMAGE_TAG, "latest");
}

#[test]
fn default_images_are_the_projects_own() {
    let image = ImageSpec::default();
    assert_eq!(
        image.reference(),
        format!("{IMAGE_REGISTRY}/switchboard:{IMAGE_TAG}")
    );
    assert_eq!(
        ManagedRedisSpec::default().image,
        format!("{IMAGE_REGISTRY}/redis:{IMAGE_TAG}")
    );
    assert_eq!(
        ManagedTurnSpec::default().image,
        format!("{IMAGE_REGISTRY}/coturn:{IMAGE_TAG}")
    );
    // The chart's operator image: the same registry, its tag defaulting to appVersion.
    let values = chart_file("values.yaml");
    assert_eq!(
        yaml_value(&values, "repository").as_deref(),
        Some(format!("{IMAGE_REGISTRY}/switchboard-operator").as_str())
    );
    assert_eq!(yaml_value(&values, "tag").as_deref(), Some(""));
    let deployment = chart_file("templates/deployment.yaml");
    assert!(
        deployment.contains(".Values.image.tag | default .Chart.AppVersion"),
        "the operator's tag defaults to appVersion"
    );
}
