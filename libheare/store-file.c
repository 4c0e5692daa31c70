/* store-file: placeholder, being written */
