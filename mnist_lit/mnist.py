"""MNIST's fixed facts, which the network, the data, users' images, export and pictures share."""

IMAGE_SIDE = 28  # every image is 28x28 grayscale
DIGIT_BOX = 20  # each digit was scaled to fit 20x20, keeping its aspect ratio, then centred by mass
NUM_CLASSES = 10  # the digits 0-9

# Pixel mean and std of the training images after scaling to [0, 1].
MEAN, STD = 0.1307, 0.3081
