/* method-service: placeholder, being written */
