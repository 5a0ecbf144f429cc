<?php
if (isset($_GET['message'])) {
    $sms = json_decode($_GET['message'], true);
    // Process incoming SMS
}

if (isset($_GET['status'])) {
    $dlr = json_decode($_GET['status'], true);
    // Update delivery status
}

if (isset($_GET['clics'])) {
    $click = json_decode($_GET['clics'], true);
    // Record the click
}

if (isset($_GET['calls'])) {
    $call = json_decode($_GET['calls'], true);
    // Log the call
}

if (isset($_GET['qualification'])) {
    $qual = json_decode($_GET['qualification'], true);
    // Sync with CRM
}

http_response_code(200);
echo 'OK';
