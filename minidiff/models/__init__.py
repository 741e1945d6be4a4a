"""Networks: the DeepFloyd IF UNets, stages 1 and 2 (``if_unet``) and the Part B MNIST UNets (``mnist``)."""
