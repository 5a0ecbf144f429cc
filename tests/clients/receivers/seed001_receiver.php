<?php
// Seed 001's callbacks, one line each as printed ($_GET["…"] with straight quotes).
if (isset($_GET["status"])) { $status_message =json_decode($_GET["status"]); }
if (isset($_GET["message"])) { $message =json_decode($_GET["message"]); }
if (isset($_GET["click"])) { $click =json_decode($_GET["click"]); }
if (isset($_GET["call"])) { $call =json_decode($_GET["call"]); }
if (isset($_GET["calls"])) { $message =json_decode($_GET["calls"]); }
