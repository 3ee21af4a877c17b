"""The model: which one, how it is compiled and run, its preprocessing, views, output formats and NMS."""
