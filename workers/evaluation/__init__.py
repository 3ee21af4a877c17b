"""Accuracy: ground-truth annotations, pairing images and faces, WIDER/VOC average precision."""
