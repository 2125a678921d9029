"""Low-rank factorization: Dense and Conv2D kernels by truncated SVD.

`factorize(model, rank_ratio=0.25)` replaces each Dense by two thinner
Dense layers and each Conv2D by a k x k convolution with fewer filters and
a 1 x 1 convolution, wherever that reduces the weights; `factorize_layer`
does it for one layer.

Example:

```python
small, report = keras_compress.lowrank.factorize(
    model, energy=0.9, return_report=True
)
print(report)
```
"""

from keras_compress.lowrank.factorize import FactorizationReport
from keras_compress.lowrank.factorize import LayerFactorization
from keras_compress.lowrank.factorize import factorize
from keras_compress.lowrank.factorize import factorize_layer

__all__ = [
    "FactorizationReport",
    "LayerFactorization",
    "factorize",
    "factorize_layer",
]
