"""Backbones shared by several models (GoogLeNet-BN, ResNet50, VGG16), kept apart from their heads so
a pretrained ImageNet checkpoint maps onto the same cells whichever model uses them."""
