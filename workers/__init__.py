"""The engine under the public API: the job, its products, the model, inputs, output and storage."""
