"""Using a trained model: predict, the served (image-in) model, the HTTP server and the KServe manifest."""
