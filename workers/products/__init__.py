"""What a job makes beside the detections: anonymized copies and face crops."""
