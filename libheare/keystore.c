/* keystore: placeholder, being written */
