"""Networks: the DeepFloyd IF stage-1 UNet (``if_unet``) and the Part B MNIST UNets (``mnist``)."""
