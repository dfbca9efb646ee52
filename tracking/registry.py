"""MLflow's Model Registry: a study's confirmed winner as a registered model.

The model is saved in MLflow's Keras format into its run (``registered_model/``) and registered
under the study's name; ``mlflow.keras.load_model("models:/<name>/<version>")`` loads it (with
the project importable, for its layers). A new version is made only when the winner changed:
the latest version's identity tags are compared first.
"""

from __future__ import annotations

import json
import tempfile
import warnings

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

ARTIFACT_PATH = "registered_model"
MAX_TAG = 5000  # MLflow's limit on a model version tag's value


def model_name(name: str) -> str:
    """``name`` as a registered model may be called: MLflow refuses '/' and ':'."""
    return name.replace("/", "_").replace(":", "_")


def _tag(value: object) -> str:
    text = json.dumps(value, sort_keys=True) if isinstance(value, dict) else str(value)
    return text[:MAX_TAG]


def register_model(
    uri: str, name: str, run_id: str, model, tags: dict[str, object], identity: tuple[str, ...] = ()
) -> str | None:
    """Log the Keras ``model`` to run ``run_id`` and register it as a new version of ``name``
    (``model_name(name)``)
    with ``tags``, unless the latest version has the same values of the ``identity`` tags;
    returns "name/version" when a version was made."""
    import mlflow.keras

    client = MlflowClient(tracking_uri=uri)
    name = model_name(name)
    tags = {k: _tag(v) for k, v in tags.items()}
    try:
        client.create_registered_model(name, description="the study's confirmed winner")
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        versions = client.search_model_versions(
            f"name = '{_quoted(name)}'", order_by=["version_number DESC"], max_results=1
        )
        if versions and identity and all(versions[0].tags.get(k) == tags.get(k) for k in identity):
            return None
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no input signature: the model takes (n, 784) pixels
        mlflow.keras.save_model(model, f"{tmp}/model", pip_requirements=["keras", "numpy"])
        client.log_artifacts(run_id, f"{tmp}/model", ARTIFACT_PATH)
    source = f"{client.get_run(run_id).info.artifact_uri}/{ARTIFACT_PATH}"
    version = client.create_model_version(name, source, run_id=run_id, tags=tags)
    return f"{name}/{version.version}"


def find_version(uri: str, name: str, identity: dict[str, str]) -> str | None:
    """ "name/version" of the latest version of ``name`` whose tags include ``identity``, or
    None (no such model or version, or a store without a registry)."""
    client = MlflowClient(tracking_uri=uri)
    name = model_name(name)
    try:
        versions = client.search_model_versions(
            f"name = '{_quoted(name)}'", order_by=["version_number DESC"]
        )
    except MlflowException:
        return None
    for v in versions:
        if all(v.tags.get(k) == value for k, value in identity.items()):
            return f"{name}/{v.version}"
    return None


def _quoted(name: str) -> str:
    return name.replace("'", "\\'")
