/* store: placeholder, being written */
