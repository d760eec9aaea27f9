"""The VK layer, free of Scrapy: method calls and their answers, ``execute`` scripts and their
planning, normalization into rows, group references and the retry delay."""
