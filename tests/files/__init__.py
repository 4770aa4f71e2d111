"""FileService and the file stores."""
