from flask import Flask, request
import json
from urllib.parse import unquote

app = Flask(__name__)

@app.route('/webhook', methods=['GET'])
def webhook():
    if 'message' in request.args:
        sms = json.loads(unquote(request.args['message']))
        print(f"SMS from {sms['from']}: {sms['message']}")
    
    if 'status' in request.args:
        dlr = json.loads(unquote(request.args['status']))
        print(f"SMS {dlr['id_sms_api']} → {dlr['status']}")
    
    if 'clics' in request.args:
        click = json.loads(unquote(request.args['clics']))
        print(f"Click from {click['phone_number']} on {click['link']}")
    
    if 'calls' in request.args:
        call = json.loads(unquote(request.args['calls']))
        print(f"{call['title']} — {call['phone_number']}")
    
    if 'qualification' in request.args:
        qual = json.loads(unquote(request.args['qualification']))
        print(f"Qualification: {qual['qualification']}")
    
    return 'OK', 200

if __name__ == '__main__':
    app.run(port=3000)
