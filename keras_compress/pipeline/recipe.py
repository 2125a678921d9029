"""Recipes: plain, serializable lists of compression steps."""

import json
import os

from keras_compress.pipeline import steps as steps_lib


class Recipe:
    """An ordered list of steps that `compress()` runs.

    A recipe is plain data: `get_config()` gives a JSON-ready dict and
    `Recipe.from_config` reads it back; `load_recipe` reads JSON or YAML
    files, e.g.:

    ```yaml
    steps:
      - {step: prune, sparsity: 0.8, epochs: 2}
      - {step: quantize, epochs: 2}
    ```

    Args:
        steps: A list of `Step` objects (`Prune`, `PruneChannels`,
            `Cluster`, `QuantizeAware`, `QuantizePostTraining`).

    Example:

    ```python
    recipe = kc.pipeline.Recipe([kc.pipeline.Prune(0.8),
                                 kc.pipeline.QuantizeAware()])
    result = kc.compress(model, (x, y), (x_val, y_val), recipe=recipe)
    ```
    """

    def __init__(self, steps):
        steps = list(steps)
        for index, step in enumerate(steps):
            if not isinstance(step, steps_lib.Step):
                raise ValueError(
                    f"Recipe step {index} must be a Step "
                    f"({', '.join(sorted(steps_lib.STEPS))}); received "
                    f"{step!r}."
                )
        self.steps = steps

    def get_config(self):
        return {"steps": [steps_lib.step_to_config(s) for s in self.steps]}

    @classmethod
    def from_config(cls, config):
        if not isinstance(config, dict) or not isinstance(
            config.get("steps"), list
        ):
            raise ValueError(
                "A recipe must be a mapping with a 'steps' list; received "
                f"{config!r}."
            )
        return cls([steps_lib.step_from_config(c) for c in config["steps"]])

    def to_json(self):
        return json.dumps(self.get_config(), indent=2)

    def __eq__(self, other):
        return isinstance(other, Recipe) and self.steps == other.steps

    def __len__(self):
        return len(self.steps)

    def __repr__(self):
        return f"Recipe([{', '.join(s.describe() for s in self.steps)}])"


def load_recipe(path):
    """Reads a recipe from a `.json`, `.yaml` or `.yml` file.

    Args:
        path: The file.

    Returns:
        A `Recipe`.

    Raises:
        ValueError: If the file is missing, malformed, or names an unknown
            step.
    """
    if not os.path.isfile(path):
        raise ValueError(f"Recipe file {path!r} does not exist.")
    with open(path) as f:
        text = f.read()
    if path.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:
            raise ImportError(
                "YAML recipes need PyYAML: pip install 'keras-compress[report]'"
                " (or write the recipe as JSON)."
            ) from None
        try:
            config = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ValueError(f"Recipe file {path!r}: {error}") from None
    else:
        try:
            config = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"Recipe file {path!r}: {error}") from None
    return Recipe.from_config(config)
