/* server: placeholder, being written */
