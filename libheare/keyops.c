/* keyops: placeholder, being written */
