"""Models. Each takes ``input_shape`` and ``num_classes`` from the data module, so any model runs on any data."""

from ablate.models.convnet import ConvNet
from ablate.models.fmpnet import FMPNet
from ablate.models.mlp import MLP
from ablate.models.preresnet import PreResNet
from ablate.models.resnet import ResNet
from ablate.models.transfer import TransferNet

__all__ = ["MLP", "ConvNet", "FMPNet", "PreResNet", "ResNet", "TransferNet"]
