"""Knowledge distillation for Keras 3: a `Distiller` model and its losses.

`Distiller(student, teacher)` trains the student on labels and on the
teacher's outputs. Its default recipe (`compile()` without `alpha`,
`temperature` or a distillation loss) matches the teacher's class ranking
(`CorrelationDistillation`) and the features its classifier reads (a
`FeatureDistillation` hint found by `classifier_features`); the keras.io
arguments `compile(optimizer, metrics, student_loss_fn, distillation_loss_fn,
alpha, temperature)` select the softened-probability KL
(`SoftTargetKLDivergence`) exactly as on keras.io. Any student works:
pruned, mixed precision, under `tf.distribute`.

Example:

```python
import keras_compress as kc

distiller = kc.distillation.Distiller(student=student, teacher=teacher)
distiller.compile(
    optimizer="adam",
    metrics=["accuracy"],
    student_loss_fn=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True),
)
distiller.fit(x_train, y_train, epochs=3)
distiller.student.save("student.keras")
```
"""

from keras_compress.distillation.distiller import Distiller
from keras_compress.distillation.features import FeatureDistillation
from keras_compress.distillation.features import classifier_features
from keras_compress.distillation.losses import CorrelationDistillation
from keras_compress.distillation.losses import SoftTargetKLDivergence
from keras_compress.distillation.losses import soft_target_kl_divergence

__all__ = [
    "CorrelationDistillation",
    "Distiller",
    "FeatureDistillation",
    "SoftTargetKLDivergence",
    "classifier_features",
    "soft_target_kl_divergence",
]
