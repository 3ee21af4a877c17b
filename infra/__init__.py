"""Running facesweep beyond the package: the local SeaweedFS launcher, the demo, images and clusters."""
