"""Hand-written layers and regularisers torch lacks: DropConnect, fractional max-pooling, noise, max-norm."""

from ablate.layers.dropconnect import DropConnectConv2d, DropConnectLinear
from ablate.layers.dropconnect_convert import convert_to_dropconnect
from ablate.layers.fractional_pool import (
    FractionalMaxPool2d,
    fmp_boundaries,
    fmp_output_size,
    fmp_pool2d,
    fmp_regions,
    fmp_span,
    fmp_test_time_average,
)
from ablate.layers.noise import (
    GaussianNoise,
    add_gradient_noise_,
    add_weight_noise_,
    apply_max_norm_,
    gradient_noise_std,
    weight_noise,
)

__all__ = [
    "DropConnectConv2d",
    "DropConnectLinear",
    "FractionalMaxPool2d",
    "GaussianNoise",
    "add_gradient_noise_",
    "add_weight_noise_",
    "apply_max_norm_",
    "convert_to_dropconnect",
    "fmp_boundaries",
    "fmp_output_size",
    "fmp_pool2d",
    "fmp_regions",
    "fmp_span",
    "fmp_test_time_average",
    "gradient_noise_std",
    "weight_noise",
]
